# -*- test-case-name: tests.test_sharing_state -*-
"""The sharing state for a configuration: the same one the instance and the CLI use."""

from __future__ import annotations

from collections.abc import Mapping

from twisted.logger import Logger

from portproxy.auth.passwords import Credential, resolve_credential, session_key_material
from portproxy.config import Config
from portproxy.sharing.state import Clock, SharingState

__all__ = ["open_sharing", "sharing_for_config"]


def open_sharing(
    config: Config, credential: Credential, *, clock: Clock, log: Logger
) -> SharingState:
    """The sharing state of C{config}'s data dir, keyed by C{credential}'s password."""
    return SharingState(
        config.data_dir,
        session_key_material(credential),
        clock=clock,
        log=log,
        public_ports=config.public_ports,
        max_share_ttl=config.max_share_ttl,
        cookie_suffix=config.cookie_suffix,
    )


def sharing_for_config(
    config: Config, *, environ: Mapping[str, str], clock: Clock, log: Logger
) -> SharingState | None:
    """For the C{share} and C{token} commands: the state the instance uses, or C{None}
    with C{--auth none}, where everything is open and sharing has no meaning.

    Finds the password as the instance does (raises C{StartupError} if it cannot).
    """
    if config.auth == "none":
        return None
    credential = resolve_credential(
        environ=environ, password_file=config.password_file, data_dir=config.data_dir
    )
    return open_sharing(config, credential, clock=clock, log=log)
