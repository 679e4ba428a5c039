"""rpo_verl: partial reasoning optimisation (RPO), dynamics-predictive sampling (DPS) and
ratio-variance regularised policy optimisation (R2VPO) as a plugin for verl 0.9.1.

Importing this package checks the installed verl version without importing verl (verl imports
``rpo_verl.plugin`` while it is itself being imported, so importing it here would be circular).
"""

from importlib import metadata as _metadata

__version__ = "0.1.0"
REQUIRED_VERL_VERSION = "0.9.1"


class VerlVersionError(ImportError):
    """Raised when the installed verl is not the version rpo_verl was built against."""


def _check_verl_version() -> None:
    try:
        installed = _metadata.version("verl")
    except _metadata.PackageNotFoundError as exc:
        raise VerlVersionError(
            f"rpo_verl {__version__} needs verl=={REQUIRED_VERL_VERSION}, but verl is not installed: "
            f"pip install 'verl[verl-core]=={REQUIRED_VERL_VERSION}'"
        ) from exc
    if installed != REQUIRED_VERL_VERSION:
        raise VerlVersionError(
            f"rpo_verl {__version__} needs verl=={REQUIRED_VERL_VERSION}, but verl=={installed} is installed: "
            f"pip install 'verl[verl-core]=={REQUIRED_VERL_VERSION}'"
        )


_check_verl_version()
