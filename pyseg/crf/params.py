"""CRF parameters as one typed object, with the presets people use."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, replace

# name -> (gaussian sxy, gaussian compat, bilateral sxy, bilateral srgb, bilateral compat, iterations)
_PRESETS = {
    # pydensecrf README and Kraehenbuehl's DenseCRF examples
    "krahenbuhl": (3.0, 3.0, 80.0, 13.0, 10.0, 5),
    # DeepLab v2 on VOC / COCO (found by cross-validation on val)
    "deeplab": (1.0, 3.0, 67.0, 3.0, 4.0, 10),
}


@dataclass(frozen=True)
class CRFParams:
    """Parameters of the 2-D dense CRF: a Gaussian (position) kernel and a bilateral (position + RGB) kernel.

    Compatibilities are Potts weights w (C(x) = -w x in pydensecrf's convention: agreement is
    rewarded); a weight of 0 switches that kernel off. Sigmas are in pixels and in 0..255 RGB units.
    """

    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0
    iterations: int = 5

    def __post_init__(self):
        for name in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"CRFParams.{name} must be a finite number > 0, got {v!r}")
        for name in ("gaussian_compat", "bilateral_compat"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"CRFParams.{name} must be a finite number, got {v!r}")
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or self.iterations < 0:
            raise ValueError(f"CRFParams.iterations must be an integer >= 0, got {self.iterations!r}")

    @classmethod
    def preset(cls, name: str) -> "CRFParams":
        """A named preset: one of ``CRFParams.presets()``."""
        try:
            g_sxy, g_c, b_sxy, b_srgb, b_c, it = _PRESETS[name]
        except KeyError:
            raise ValueError(
                f"unknown CRF preset {name!r}; choose one of {sorted(_PRESETS)}") from None
        return cls(g_sxy, g_c, b_sxy, b_srgb, b_c, it)

    @staticmethod
    def presets() -> list[str]:
        return sorted(_PRESETS)

    @classmethod
    def from_file(cls, path) -> "CRFParams":
        """The parameters in a ``.json`` file: ``pyseg-tune-crf --out``'s (``{"params": {...}, ...}``) or a plain
        mapping of these fields. Errors name the file."""
        from pyseg.fileio import read_json

        data = read_json(path, "CRF parameter file")
        data = data.get("params", data) if isinstance(data, dict) else data
        if not isinstance(data, dict):
            raise ValueError(f"CRF parameter file {path} must hold a mapping of CRF parameters, got "
                             f"{type(data).__name__}")
        try:
            return cls(**data)
        except TypeError as e:
            raise ValueError(f"CRF parameter file {path} does not hold CRF parameters: {e}") from None

    def replace(self, **changes) -> "CRFParams":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_params(params: "CRFParams | None", iterations) -> tuple["CRFParams", int]:
    """(params, iterations) as every backend takes them: None -> the krahenbuhl preset and its iterations.

    TypeError for a params object that is not a CRFParams or a non-integer iteration count; ValueError for
    a negative one. (CRFParams checks its own sigmas and weights when it is built.)
    """
    if params is None:
        params = CRFParams.preset("krahenbuhl")
    if not isinstance(params, CRFParams):
        raise TypeError(f"params must be a CRFParams (or None), got {type(params).__name__} {params!r:.60}")
    if iterations is None:
        iterations = params.iterations
    if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral):
        raise TypeError(f"iterations must be an integer >= 0, got {type(iterations).__name__} {iterations!r}")
    if iterations < 0:
        raise ValueError(f"iterations must be an integer >= 0, got {iterations!r}")
    return params, int(iterations)
