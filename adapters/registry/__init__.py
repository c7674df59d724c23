"""OCI distribution client and OCI image-layout source/sink.

Public surface: ``parse_reference``/``ImageReference``, ``ClientOptions``/``RetryPolicy``,
``RegistryClient``, ``OciLayout``, ``open_source``/``open_sink``, ``resolve``/``pull_into`` and the
media-type helpers in ``media``. Errors are in ``adapters.registry.errors``.
"""

from .client import RawManifest, RegistryClient
from .endpoints import ImageSink, ImageSource, open_sink, open_source
from .layout import OciLayout
from .media import Descriptor, Manifest, Platform
from .options import ClientOptions, RetryPolicy
from .pull import PulledImage, ResolvedImage, pull_into, resolve
from .reference import ImageReference, parse_reference

__all__ = [
    "ClientOptions",
    "Descriptor",
    "ImageReference",
    "ImageSink",
    "ImageSource",
    "Manifest",
    "OciLayout",
    "Platform",
    "PulledImage",
    "RawManifest",
    "RegistryClient",
    "ResolvedImage",
    "RetryPolicy",
    "open_sink",
    "open_source",
    "parse_reference",
    "pull_into",
    "resolve",
]
