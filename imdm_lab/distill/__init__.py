"""Few-step distillation written against the Denoiser protocol (used by toy_tasks and scale).

- sdtt: SDTT / IM-SDTT teacher targets and loss, round plan (Ugness/IMDM algo.py, IMSDTT);
- redi: ReDi / IM-ReDi perturbed coupling and its fine-tuning loss (Ugness/IMDM main.py, generate_reflow_dataset;
  algo.py, IMReDi.nll);
- eps_coupling: the eps-driven coupling, where the teacher's completion is a function of eps.
"""
from imdm_lab.distill.eps_coupling import READERS, eps_coupled_completion, eps_coupling_loss, inverse_cdf, read_labels
from imdm_lab.distill.redi import Coupling, coupling_loss, perturbed_coupling
from imdm_lab.distill.sdtt import round_plan, sdtt_loss, teacher_targets

__all__ = ["READERS", "Coupling", "coupling_loss", "eps_coupled_completion", "eps_coupling_loss", "inverse_cdf",
           "perturbed_coupling", "read_labels", "round_plan", "sdtt_loss", "teacher_targets"]
