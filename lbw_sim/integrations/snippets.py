"""The few lines that put an exported spec to work in each training stack (the designer's
export shows them next to the YAML; `tests/test_integrations_tb.py` runs the PyTorch one)."""

from __future__ import annotations

PYTORCH = '''\
import torch
from lbw_sim import GuardedOptimizer, GuardSpec

opt = GuardedOptimizer(torch.optim.AdamW(model.parameters(), lr=3e-4),
                       GuardSpec.load("{spec_file}"))
for x, y in loader:
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step(loss=loss)              # observe -> decide -> bounded control
    if opt.should_stop:
        break
'''

HF_TRAINER = '''\
from lbw_sim import GuardSpec
from lbw_sim.integrations.hf import GuardedTrainer   # pip install lbw-sim[hf]

trainer = GuardedTrainer(model=model, args=args, train_dataset=train_dataset,
                         guard_spec=GuardSpec.load("{spec_file}"))
trainer.train()
'''

LIGHTNING = '''\
import lightning as L
from lbw_sim import GuardSpec
from lbw_sim.integrations.lightning import GuardCallback   # pip install lbw-sim[lightning]

trainer = L.Trainer(max_steps=1000, callbacks=[GuardCallback(GuardSpec.load("{spec_file}"))])
trainer.fit(module, train_dataloader)
'''

STACKS = {"PyTorch": PYTORCH, "Hugging Face Trainer": HF_TRAINER, "Lightning": LIGHTNING}


def usage(spec_file: str = "guard_spec.yaml") -> dict[str, str]:
    """Stack name -> Python lines that load `spec_file` and guard a run with it."""
    if not spec_file or any(c in spec_file for c in "\"\\\n"):
        raise ValueError(f"spec file name {spec_file!r} cannot go in a Python string as is")
    return {name: code.format(spec_file=spec_file) for name, code in STACKS.items()}
