"""tralgo.integrations and docs/integrations.md (issue 11, item 7).

Every ```python block of the docs page runs here; its first line (``# needs: a, b``) names the
packages it imports, and the block is skipped when one of them does not import (timm here: it
needs torchvision, which is not installed next to this CPU torch).
"""
import importlib
import re
from pathlib import Path

import pytest
import torch

import tralgo
from tralgo import integrations

DOC = Path(__file__).resolve().parents[1] / "docs" / "integrations.md"


def _doc_blocks():
    text = DOC.read_text()
    blocks = []
    for match in re.finditer(r"^## (.+?)$|^```python\n(.*?)^```", text, flags=re.S | re.M):
        if match.group(1):
            heading = match.group(1).strip()
        else:
            blocks.append(pytest.param(match.group(2), id=heading))
    return blocks


def test_every_block_names_its_packages():
    blocks = _doc_blocks()
    assert [b.id for b in blocks] == ["Lightning", "Hugging Face Trainer", "accelerate", "timm", "pytorch_optimizer"]
    assert all(b.values[0].startswith("# needs: ") for b in blocks)


@pytest.mark.parametrize("code", _doc_blocks())
def test_docs_block_runs(code, tmp_path, monkeypatch):
    needs = code.splitlines()[0].removeprefix("# needs: ").split(", ")
    for package in needs:
        pytest.importorskip(package, exc_type=ImportError)
    monkeypatch.chdir(tmp_path)  # the trainers write their output folders here
    exec(compile(code, f"{DOC.name}", "exec"), {"__name__": "__docs__"})


def test_optimizer_class_by_name():
    assert integrations.optimizer_class("TRAdamW") is tralgo.TRAdamW
    with pytest.raises(ValueError, match=r"name must be one of \['tradam', 'tradamw', 'trsgd'\], got 'sgd'"):
        integrations.optimizer_class("sgd")


def test_trainer_optimizer_takes_the_training_arguments():
    transformers = pytest.importorskip("transformers")
    args = transformers.TrainingArguments(output_dir="unused", learning_rate=0.03, adam_beta1=0.8, adam_beta2=0.99,
                                          adam_epsilon=1e-6, report_to=[])
    assert integrations.trainer_optimizer("tradam", args, lam=0.2) == (
        tralgo.TRAdam, {"lr": 0.03, "betas": (0.8, 0.99), "eps": 1e-6, "lam": 0.2})
    assert integrations.trainer_optimizer("trsgd", args, momentum=0.9, lr=0.5) == (
        tralgo.TRSGD, {"lr": 0.5, "momentum": 0.9})  # explicit options win; SGD has no betas
    assert integrations.trainer_optimizer("trsgd") == (tralgo.TRSGD, {})


def test_pytorch_optimizer_names_build_the_same_optimizer_as_the_class():
    po = pytest.importorskip("pytorch_optimizer")
    assert integrations.register_pytorch_optimizer() == ["trsgd", "tradam", "tradamw"]
    assert {name: po.load_optimizer(name.upper()) for name in integrations.OPTIMIZERS} == integrations.OPTIMIZERS
    assert {"trsgd", "tradam", "tradamw"} <= set(po.get_supported_optimizers())
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    by_name = po.create_optimizer(model, "tradam", lr=0.01, lam=0.3, inner_steps=5)
    direct = tralgo.TRAdam([{"params": model.parameters(), "weight_decay": 0.0}], lr=0.01, lam=0.3, inner_steps=5)
    assert by_name.param_groups[0].keys() == direct.param_groups[0].keys()
    assert all(by_name.param_groups[0][k] == direct.param_groups[0][k] for k in direct.param_groups[0] if k != "params")


def test_register_timm():
    timm_optim = pytest.importorskip("timm.optim", exc_type=ImportError)
    assert integrations.register_timm() == ["trsgd", "tradam", "tradamw"]
    model = torch.nn.Linear(3, 2)
    opt = timm_optim.create_optimizer_v2(model, "tradam", lr=0.01, lam=0.3, betas=(0.8, 0.9))
    assert isinstance(opt, tralgo.TRAdam) and opt.param_groups[0]["betas"] == (0.8, 0.9)
    assert opt.param_groups[0]["lam"] == 0.3


def test_a_missing_library_is_named_with_the_install_command():
    try:
        importlib.import_module("timm.optim")
    except ImportError:
        with pytest.raises(ImportError, match=r"this helper needs timm .*pip install timm"):
            integrations.register_timm()
    else:
        pytest.skip("timm imports here")
