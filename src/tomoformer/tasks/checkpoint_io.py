"""Lightning checkpoints written atomically: a crash mid-save never leaves a truncated ``last.ckpt``."""

from __future__ import annotations

from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from tomoformer.io import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """:class:`TorchCheckpointIO` that saves into a temporary sibling and renames it onto the final name.

    Lightning writes ``.ckpt`` files in place, so a kill during a save (SIGKILL, pre-emption, full disk) would
    destroy the previous ``last.ckpt`` that ``--resume`` needs. Remote paths (``s3://`` ...) keep Lightning's saving.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        """Lightning's loading, always with ``weights_only=True`` (``--resume`` reads a file from disk, which may
        not be ours); a file that needs unpickling is refused with one line, never with advice to unpickle it."""
        from tomoformer.checkpoint import refusal

        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        except Exception as err:
            raise refusal(path, err) from None


def _is_local(path: Any) -> bool:
    protocol = get_filesystem(path).protocol
    return "file" in (protocol if isinstance(protocol, tuple | list) else (protocol,))
