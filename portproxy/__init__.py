"""portproxy: open web apps that listen on local ports through one signed-in address."""

__version__ = "0.1.0"
