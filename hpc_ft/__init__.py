"""hpc_ft: a PyTorch fine-tuning job from a Hydra config to a Slurm cluster and back."""

from pathlib import Path

__version__ = "0.1.0"

# conf/ and slurm_templates/ live at the repository top level (the project is installed editable).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = PROJECT_ROOT / "conf"
TEMPLATES_DIR = PROJECT_ROOT / "slurm_templates"
