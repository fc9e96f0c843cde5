"""Packaging for portproxy.

The Twisted plugin lives in twisted/plugins/ (no __init__.py there, on purpose: that
directory is a namespace shared with Twisted), so it is listed by hand.
"""

from setuptools import find_packages, setup

with open("README.rst", encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="portproxy",
    version="0.1.0",
    description="Open web apps on local ports through one signed-in HTTP(S) address.",
    long_description=long_description,
    long_description_content_type="text/x-rst",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(exclude=["tests", "tests.*", "docs", "docs.*"])
    + ["twisted.plugins"],
    package_data={"portproxy": ["py.typed"]},
    install_requires=[
        "twisted>=25.5",
        "autobahn>=24.4",
        # 24.3: cryptography's key and certificate objects go straight to OpenSSL.
        "pyopenssl>=24.3",
        "service-identity>=24",
        # Used directly for --cert checks and --self-signed (42: *_utc validity dates).
        "cryptography>=42",
        "argon2-cffi>=23",
    ],
    extras_require={
        # HTTP/2 for browsers on TLS listeners (twisted.web offers h2 through ALPN
        # when the h2 package is installed); see docs/tls.rst.
        "http2": ["twisted[http2]"],
        "test": [
            "twisted[http2]",
            "pytest>=8",
            "pytest-twisted>=1.14",
            "hypothesis>=6",
            "treq>=24",
            # tests/test_docs.py builds the documentation with warnings as errors.
            "sphinx>=7.0",
        ],
        "docs": ["sphinx>=7.0"],
        "dev": ["mypy>=1.10", "mypy-zope>=1.0", "ruff>=0.5"],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: Internet :: Proxy Servers",
    ],
)
