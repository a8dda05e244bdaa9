"""Options that several commands share, defined once: same flag, same short name, same help.

Use them as parameter annotations::

    def extract(..., device: DeviceOption = None, quiet: QuietOption = False) -> None: ...
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

DeviceOption = Annotated[
    Optional[str],
    typer.Option("--device", help="cpu, cuda, cuda:N or mps (default: CUDA if available, else MPS, else CPU)."),
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no summary; errors only.")]
OverwriteOption = Annotated[
    bool, typer.Option("--overwrite", help="Replace what an earlier run left in the output directory.")
]
SeedOption = Annotated[Optional[int], typer.Option("--seed", help="Random seed (default: the command's own, 0).")]
SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="Override one config value, e.g. --set optim.learning_rate=1e-3 (repeatable)."),
]
