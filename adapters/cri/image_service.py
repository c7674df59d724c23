"""``runtime.v1.ImageService``: image calls translated for a ``PodBackend``.

Names are normalised here (``busybox`` -> ``docker.io/library/busybox:latest``) and images are
looked up by tag, digest, id or id prefix against the backend's list, as containerd does, so the
backend only ever sees full image ids.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc

from . import convert_in, convert_out
from .backend import PodBackend
from .errors import InvalidArgument
from .gen import api_pb2 as pb
from .gen import api_pb2_grpc as pb_grpc
from .models import ImageInfo
from .rpc import rpc
from .selectors import image_matches
from .validate import required, try_image_reference

Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class ImageService(pb_grpc.ImageServiceServicer):
    """The ImageService handlers over one backend."""

    def __init__(self, backend: PodBackend) -> None:
        self._backend = backend

    async def _find(self, wanted: str) -> ImageInfo | None:
        """The image ``wanted`` names, or ``None``; an ambiguous id prefix is an error."""
        normalised = try_image_reference(wanted)
        found = [i for i in await self._backend.list_images() if image_matches(wanted, i, normalised)]
        by_name = [i for i in found if normalised in i.repo_tags or normalised in i.repo_digests]
        if by_name:
            return by_name[0]
        if len(found) > 1:
            raise InvalidArgument(f"The image id prefix {wanted!r} matches {len(found)} images; give more digits.")
        return found[0] if found else None

    @rpc
    async def PullImage(self, request: pb.PullImageRequest, context: Ctx) -> pb.PullImageResponse:
        if not request.HasField("image"):
            raise InvalidArgument("image is required: the image reference to pull.")
        spec = convert_in.image_spec(request.image)
        sandbox = (
            convert_in.sandbox_config(request.sandbox_config, "sandbox_config")
            if request.HasField("sandbox_config")
            else None
        )
        image_ref = await self._backend.pull_image(spec, convert_in.auth_config(request), sandbox)
        return pb.PullImageResponse(image_ref=image_ref)

    @rpc
    async def ImageStatus(self, request: pb.ImageStatusRequest, context: Ctx) -> pb.ImageStatusResponse:
        wanted = required(request.image.image, "image.image")
        found = await self._find(wanted)
        if found is None:
            return pb.ImageStatusResponse()  # CRI: an unknown image is an empty answer, not an error
        image = await self._backend.image_status(found.id)
        if image is None:
            return pb.ImageStatusResponse()
        info = convert_out.info_map(image.extra_info) if request.verbose else {}
        return pb.ImageStatusResponse(image=convert_out.image(image), info=info)

    @rpc
    async def ListImages(self, request: pb.ListImagesRequest, context: Ctx) -> pb.ListImagesResponse:
        images = await self._backend.list_images()
        wanted = request.filter.image.image
        if wanted:
            normalised = try_image_reference(wanted)
            images = [i for i in images if image_matches(wanted, i, normalised)]
        return pb.ListImagesResponse(images=[convert_out.image(i) for i in images])

    @rpc
    async def RemoveImage(self, request: pb.RemoveImageRequest, context: Ctx) -> pb.RemoveImageResponse:
        wanted = required(request.image.image, "image.image")
        found = await self._find(wanted)
        if found is not None:  # removing an unknown image succeeds: removal is idempotent
            await self._backend.remove_image(found.id)
        return pb.RemoveImageResponse()

    @rpc
    async def ImageFsInfo(self, request: pb.ImageFsInfoRequest, context: Ctx) -> pb.ImageFsInfoResponse:
        usage = await self._backend.image_fs_info()
        return pb.ImageFsInfoResponse(image_filesystems=[convert_out.filesystem_usage(f) for f in usage])
