"""lessons/exercises/check.py: minivae's solutions pass, the stubs are "not done yet", a correct student
file passes, and every diagnosis names the bug planted for it (a wrong file written to tmp_path and
graded with --dir). The checker runs in-process; the command line and its exit codes in a subprocess."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXERCISES = Path(__file__).resolve().parent.parent / "lessons" / "exercises"


def load_checker():
    spec = importlib.util.spec_from_file_location("exercises_check", EXERCISES / "check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = load_checker()

# A correct student file for every exercise, written the way a student would (not minivae's code).
CORRECT = {
    "linear": """
import minivae.nn

class Linear(minivae.nn.Linear):
    def backward(self, dy):
        self.grads["weight"][...] = dy.T @ self.x
        self.grads["bias"][...] = dy.sum(axis=0)
        return dy @ self.params["weight"]
""",
    "relu": """
from minivae.nn import Module

class ReLU(Module):
    def forward(self, x):
        self.mask = x > 0
        return x * self.mask

    def backward(self, dy):
        return dy * self.mask
""",
    "sigmoid": """
import minivae.nn

class Sigmoid(minivae.nn.Sigmoid):
    def backward(self, dy):
        return dy * self.y * (1.0 - self.y)
""",
    "bce": """
import numpy as np

def bce_with_logits(logits, target):
    n = logits.shape[0]
    elems = np.maximum(logits, 0) - logits * target + np.log1p(np.exp(-np.abs(logits)))
    s = np.exp(np.minimum(logits, 0)) / (1 + np.exp(-np.abs(logits)))
    return elems.sum() / n, (s - target) / n
""",
    "im2col": """
import numpy as np

def im2col(x, kh, kw, sh, sw):
    n, c, h, w = x.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    cols = np.empty((c, kh, kw, ho, wo, n))
    for i in range(kh):
        for j in range(kw):
            cols[:, i, j] = x[:, :, i : i + sh * ho : sh, j : j + sw * wo : sw].transpose(1, 2, 3, 0)
    return cols.reshape(c * kh * kw, ho * wo * n)
""",
    "col2im": """
import numpy as np

def col2im(cols, x_shape, kh, kw, sh, sw):
    n, c, h, w = x_shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    cols = cols.reshape(c, kh, kw, ho, wo, n)
    x = np.zeros((c, h, w, n))
    for i in range(kh):
        for j in range(kw):
            x[:, i : i + sh * ho : sh, j : j + sw * wo : sw] += cols[:, i, j]
    return x.transpose(3, 0, 1, 2)
""",
    "reparam": """
import numpy as np

class Reparameterize:
    def forward(self, mu, logvar, eps):
        self.noise = np.exp(0.5 * logvar) * eps
        return mu + self.noise

    def backward(self, dz):
        return dz, 0.5 * dz * self.noise
""",
    "kl": """
import numpy as np

def kl_normal(mu, logvar):
    n = mu.shape[0]
    value = 0.5 * (np.exp(logvar) + mu**2 - 1 - logvar).sum() / n
    return value, mu / n, 0.5 * (np.exp(logvar) - 1) / n
""",
    "adam": """
import numpy as np
import minivae.nn.optim

class Adam(minivae.nn.optim.Adam):
    def _update(self, state, p, g):
        if not state:
            state["exp_avg"], state["exp_avg_sq"] = np.zeros_like(p), np.zeros_like(p)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        (b1, b2), t = self.betas, self.t
        m[...] = b1 * m + (1 - b1) * g
        v[...] = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        p -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
""",
    "train_step": """
from minivae.nn.losses import bce_with_logits, kl_normal

def train_step(model, optimizer, x, eps, beta):
    h = model.encoder.forward(x)
    mu, logvar = model.fc_mu.forward(h), model.fc_logvar.forward(h)
    logits = model.decoder.forward(model.reparam.forward(mu, logvar, eps))
    recon, dlogits = bce_with_logits(logits, x)
    kl, dmu_kl, dlogvar_kl = kl_normal(mu, logvar)
    dmu_z, dlogvar_z = model.reparam.backward(model.decoder.backward(dlogits))
    dh = model.fc_mu.backward(beta * dmu_kl + dmu_z) + model.fc_logvar.backward(beta * dlogvar_kl + dlogvar_z)
    model.encoder.backward(dh)
    optimizer.step()
    return float(recon + beta * kl)
""",
    "iwae": """
import numpy as np

def log_mean_exp(log_w):
    m = log_w.max(axis=1, keepdims=True)
    e = np.exp(log_w - m)
    s = e.sum(axis=1, keepdims=True)
    value = (m + np.log(s)).squeeze(1) - np.log(log_w.shape[1])
    return value, e / s
""",
}

# conv2d: the stub's given forward (it caches self.cols and self.x_pad_shape) and this backward
CORRECT["conv2d"] = (
    (EXERCISES / "ex07_conv2d.py")
    .read_text()
    .replace(  # the stub must hold this line
        """        raise NotImplementedError("exercise: write Conv2d.backward (dW, db and dx)")
""",
        """        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        dy_mat = dy.transpose(1, 2, 3, 0).reshape(self.out_channels, -1)
        self.grads["weight"][...] = (dy_mat @ self.cols.T).reshape(self.grads["weight"].shape)
        self.grads["bias"][...] = dy.sum(axis=(0, 2, 3))
        w_mat = self.params["weight"].reshape(self.out_channels, -1)
        dx_pad = col2im(w_mat.T @ dy_mat, self.x_pad_shape, kh, kw, sh, sw)
        n, c, h, w = self.x_pad_shape
        return dx_pad[:, :, ph : h - ph, pw : w - pw]
""",
    )
)
UNFLIPPED_DX = """
        from minivae.nn.module import pad2d
        w_t = self.params["weight"].transpose(1, 0, 2, 3).reshape(self.in_channels, -1)
        dy_pad = pad2d(dy, (kw - 1 - pw, kw - 1 - pw, kh - 1 - ph, kh - 1 - ph))
        ho, wo = dy_pad.shape[2] - kh + 1, dy_pad.shape[3] - kw + 1
        cols = minivae.nn.im2col(dy_pad, kh, kw, 1, 1)
        return (w_t @ cols).reshape(self.in_channels, ho, wo, dy.shape[0]).transpose(3, 0, 1, 2)
"""
ONE_IMAGE = "dy_mat[:, :: dy.shape[0]] @ self.cols[:, :: dy.shape[0]].T"  # image 0's columns
NAIVE_BCE = (
    "-(target * np.log(1 / (1 + np.exp(-logits))) + (1 - target) * np.log(1 - 1 / (1 + np.exp(-logits))))"
)

# (exercise, the diagnosis that must name it, {text in CORRECT[exercise]: what the bug puts there})
BUGS = [
    ("linear", "bias_averaged", {"dy.sum(axis=0)": "dy.mean(axis=0)"}),
    (
        "linear",
        "weight_transposed",
        {'self.grads["weight"][...] = dy.T @ self.x': 'self.grads["weight"] = self.x.T @ dy'},
    ),
    ("linear", "weight_transposed", {"dy.T @ self.x": "(self.x.T @ dy).T.T"}),
    ("linear", "dx_with_weight_transposed", {'dy @ self.params["weight"]': 'dy @ self.params["weight"].T'}),
    ("linear", "grads_accumulated", {'self.grads["weight"][...] = ': 'self.grads["weight"][...] += '}),
    ("relu", "mask_missing", {"return dy * self.mask": "return dy"}),
    (
        "relu",
        "mask_missing",
        {
            "self.mask = x > 0": "self.y = x * (x > 0)",
            "dy * self.mask": "dy * (self.y >= 0)",
            "x * self.mask": "self.y",
        },
    ),
    ("relu", "mask_at_zero", {"self.mask = x > 0": "self.mask = x >= 0"}),
    ("relu", "mask_inverted", {"return dy * self.mask": "return dy * (1 - self.mask)"}),
    ("relu", "forward_in_place", {"return x * self.mask": "x[~self.mask] = 0\n        return x"}),
    ("relu", "mask_without_dy", {"return dy * self.mask": "return self.mask * 1.0"}),
    ("sigmoid", "derivative_s", {"dy * self.y * (1.0 - self.y)": "dy * self.y"}),
    ("sigmoid", "derivative_one_minus_s", {"dy * self.y * (1.0 - self.y)": "dy * (1.0 - self.y)"}),
    ("sigmoid", "derivative_without_dy", {"dy * self.y * (1.0 - self.y)": "self.y * (1.0 - self.y)"}),
    ("sigmoid", "sign_flipped", {"dy * self.y * (1.0 - self.y)": "-dy * self.y * (1.0 - self.y)"}),
    (
        "bce",
        "overflow",
        {"np.maximum(logits, 0) - logits * target + np.log1p(np.exp(-np.abs(logits)))": NAIVE_BCE},
    ),
    (
        "bce",
        "overflow",
        {"np.log1p(np.exp(-np.abs(logits)))": "np.log1p(np.exp(-logits)) + np.minimum(logits, 0)"},
    ),
    ("bce", "grad_sign_flipped", {"(s - target) / n": "(target - s) / n"}),
    ("bce", "summed_over_batch", {"elems.sum() / n, (s - target) / n": "elems.sum(), s - target"}),
    ("bce", "summed_over_batch", {"(s - target) / n": "s - target"}),
    (
        "bce",
        "mean_over_pixels",
        {"elems.sum() / n, (s - target) / n": "elems.mean(), (s - target) / logits.size"},
    ),
    (
        "im2col",
        "rows_permuted",
        {
            "np.empty((c, kh, kw, ho, wo, n))": "np.empty((kh, kw, c, ho, wo, n))",
            "cols[:, i, j]": "cols[i, j]",
        },
    ),
    (
        "im2col",
        "rows_permuted",
        {
            "np.empty((c, kh, kw, ho, wo, n))": "np.empty((c, kw, kh, ho, wo, n))",
            "cols[:, i, j]": "cols[:, j, i]",
        },
    ),
    (
        "im2col",
        "columns_permuted",
        {
            "np.empty((c, kh, kw, ho, wo, n))": "np.empty((c, kh, kw, n, ho, wo))",
            ".transpose(1, 2, 3, 0)": ".transpose(1, 0, 2, 3)",
        },
    ),
    (
        "im2col",
        "transposed",
        {"return cols.reshape(c * kh * kw, ho * wo * n)": "return cols.reshape(c * kh * kw, ho * wo * n).T"},
    ),
    (
        "im2col",
        "stride_ignored",
        {
            "(h - kh) // sh + 1, (w - kw) // sw + 1": "h - kh + 1, w - kw + 1",
            "i : i + sh * ho : sh, j : j + sw * wo : sw": "i : i + ho, j : j + wo",
        },
    ),
    ("col2im", "overwrites", {"] += cols[:, i, j]": "] = cols[:, i, j]"}),
    (
        "col2im",
        "misplaced",
        {
            "cols.reshape(c, kh, kw, ho, wo, n)": "cols.reshape(kh, kw, c, ho, wo, n).transpose(2, 0, 1, 3, 4, 5)"
        },
    ),
    ("col2im", "axes_chwn", {"return x.transpose(3, 0, 1, 2)": "return x"}),
    ("conv2d", "weight_one_image", {"dy_mat @ self.cols.T": ONE_IMAGE}),
    ("conv2d", "weight_averaged", {"(dy_mat @ self.cols.T)": "(dy_mat @ self.cols.T / dy.shape[0])"}),
    ("conv2d", "bias_averaged", {"dy.sum(axis=(0, 2, 3))": "dy.sum(axis=(2, 3)).mean(axis=0)"}),
    (
        "conv2d",
        "unflipped_kernel",
        {"        w_mat = self.params": UNFLIPPED_DX + "        w_mat = self.params"},
    ),
    ("conv2d", "padding_kept", {"return dx_pad[:, :, ph : h - ph, pw : w - pw]": "return dx_pad"}),
    ("reparam", "variance_for_std", {"np.exp(0.5 * logvar)": "np.exp(logvar)"}),
    ("reparam", "logvar_as_std", {"np.exp(0.5 * logvar) * eps": "logvar * eps"}),
    ("reparam", "dlogvar_missing_half", {"0.5 * dz * self.noise": "dz * self.noise"}),
    (
        "reparam",
        "dlogvar_missing_std",
        {
            "self.noise = ": "self.eps = eps\n        self.noise = ",
            "0.5 * dz * self.noise": "0.5 * dz * self.eps",
        },
    ),
    (
        "reparam",
        "dmu_scaled",
        {
            "self.noise = ": "self.std = np.exp(0.5 * logvar)\n        self.noise = ",
            "return dz,": "return dz * self.std,",
        },
    ),
    ("kl", "dmu_factor_2", {"mu / n,": "2 * mu / n,"}),
    ("kl", "dlogvar_factor_2", {"0.5 * (np.exp(logvar) - 1) / n": "(np.exp(logvar) - 1) / n"}),
    ("kl", "sign_flipped", {"0.5 * (np.exp(logvar) - 1) / n": "0.5 * (1 - np.exp(logvar)) / n"}),
    ("kl", "value_factor_2", {"value = 0.5 * (": "value = ("}),
    ("kl", "summed_over_batch", {"n = mu.shape[0]": "n = 1"}),
    ("adam", "no_bias_correction", {"m / (1 - b1**t), v / (1 - b2**t)": "m, v"}),
    ("adam", "half_bias_correction", {"m / (1 - b1**t), v / (1 - b2**t)": "m / (1 - b1**t), v"}),
    ("adam", "eps_inside_sqrt", {"(np.sqrt(v_hat) + self.eps)": "np.sqrt(v_hat + self.eps)"}),
    ("adam", "state_not_kept", {"m[...] = b1 * m": "m = b1 * m", "v[...] = b2 * v": "v = b2 * v"}),
    ("adam", "uphill", {"p -= ": "p += "}),
    ("adam", "not_in_place", {"p -= self.lr": "p = p - self.lr"}),
    ("train_step", "kl_grad_without_beta", {"beta * dmu_kl": "dmu_kl", "beta * dlogvar_kl": "dlogvar_kl"}),
    (
        "train_step",
        "kl_grad_missing",
        {"beta * dmu_kl + dmu_z": "dmu_z", "beta * dlogvar_kl + dlogvar_z": "dlogvar_z"},
    ),
    ("train_step", "z_path_missing", {"+ dmu_z)": ")", "+ dlogvar_z)": ")"}),
    ("train_step", "no_step", {"    optimizer.step()\n": ""}),
    (
        "train_step",
        "step_before_backward",
        {"    optimizer.step()\n": "", "    dmu_z, dlogvar_z": "    optimizer.step()\n    dmu_z, dlogvar_z"},
    ),
    ("train_step", "loss_without_beta", {"float(recon + beta * kl)": "float(recon + kl)"}),
    (
        "iwae",
        "overflow",
        {"m = log_w.max(axis=1, keepdims=True)": "m = 0 * log_w.max(axis=1, keepdims=True)"},
    ),
    ("iwae", "missing_log_k", {" - np.log(log_w.shape[1])": ""}),
    (
        "iwae",
        "mean_of_log_w",
        {"value = (m + np.log(s)).squeeze(1) - np.log(log_w.shape[1])": "value = log_w.mean(axis=1)"},
    ),
    ("iwae", "weights_unnormalised", {"return value, e / s": "return value, e"}),
]


def write(directory: Path, name: str, source: str) -> None:
    (directory / check.BY_NAME[name].filename).write_text(source)


def planted(name: str, edits: dict[str, str]) -> str:
    source = CORRECT[name]
    for old, new in edits.items():
        assert old in source, f"planted bug for {name}: {old!r} is not in the correct file"
        source = source.replace(old, new)
    return source


def test_minivae_solutions_pass_every_check(capsys):
    outcomes = check.run([], directory=None)
    assert [o.exercise.name for o in outcomes] == list(check.BY_NAME)
    for o in outcomes:
        assert o.status == "PASS", capsys.readouterr().out
        assert o.measures and all(m.ok for m in o.measures) and not o.bugs


def test_untouched_stubs_are_not_done_yet(capsys):
    outcomes = check.run([])
    text = capsys.readouterr().out
    assert [o.status for o in outcomes] == ["NOT DONE"] * len(check.EXERCISES)
    assert text.count("not done yet") == len(check.EXERCISES) and "Traceback" not in text
    assert "0 of 12 passed" in check.summary(outcomes)


def test_correct_student_files_pass(tmp_path, capsys):
    for name, source in CORRECT.items():
        write(tmp_path, name, source)
    outcomes = check.run([], directory=tmp_path)
    assert all(o.status == "PASS" and not o.bugs for o in outcomes), capsys.readouterr().out


def test_every_diagnosis_has_a_planted_bug():
    diagnosed = {(ex.name, d.key) for ex in check.EXERCISES for d in ex.diagnoses}
    assert diagnosed == {(name, key) for name, key, _ in BUGS}
    assert all(len(ex.diagnoses) >= 2 for ex in check.EXERCISES)


@pytest.mark.parametrize(
    ("name", "key", "edits"), BUGS, ids=[f"{n}-{k}-{i}" for i, (n, k, _) in enumerate(BUGS)]
)
def test_planted_bug_is_caught_and_named(tmp_path, name, key, edits):
    write(tmp_path, name, planted(name, edits))
    out = check.grade(check.BY_NAME[name], tmp_path)
    assert out.status in ("FAIL", "ERROR")
    assert [d.key for d in out.bugs] == [key], (out.detail, out.measures)  # this bug, and no other


def test_an_exception_is_one_line_naming_the_students_line(tmp_path):
    write(tmp_path, "linear", CORRECT["linear"].replace("dy.sum(axis=0)", "dy.summ(axis=0)"))
    out = check.grade(check.BY_NAME["linear"], tmp_path)
    line = CORRECT["linear"].splitlines().index('        self.grads["bias"][...] = dy.sum(axis=0)') + 1
    assert out.status == "ERROR"
    assert out.detail.startswith(f"AttributeError at ex01_linear.py:{line}: "), out.detail
    write(tmp_path, "kl", "def kl_normal(mu, logvar)\n    return 0\n")
    out = check.grade(check.BY_NAME["kl"], tmp_path)
    assert out.status == "ERROR" and out.detail.startswith("SyntaxError at ex09_kl.py:1"), out.detail


def test_a_missing_file_says_how_to_restore_it(tmp_path):
    out = check.grade(check.BY_NAME["adam"], tmp_path)
    assert out.status == "NOT DONE" and "git checkout" in out.detail


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(EXERCISES / "check.py"), *args], capture_output=True, text=True, timeout=120
    )


def test_exit_code_is_zero_only_when_everything_asked_for_passes(tmp_path, capsys):
    write(tmp_path, "linear", CORRECT["linear"])
    write(tmp_path, "relu", planted("relu", {"self.mask = x > 0": "self.mask = x >= 0"}))
    assert check.main(["linear"]) == 1 and "not done yet" in capsys.readouterr().out
    assert check.main(["linear", "--dir", str(tmp_path)]) == 0
    assert "1 of 1 passed" in capsys.readouterr().out
    both = cli("linear", "relu", "--dir", str(tmp_path))  # as the student runs it: the real exit code
    assert both.returncode == 1 and "likely bug: right except at x = 0 exactly" in both.stdout
    assert "[PASS] linear" in both.stdout and "[FAIL] relu" in both.stdout and "Traceback" not in both.stdout
    solution = cli("--solution")
    assert solution.returncode == 0 and "12 of 12 passed" in solution.stdout, solution.stdout
    with pytest.raises(SystemExit) as bad:
        check.main(["no_such_exercise"])
    assert bad.value.code == 2 and "unknown exercise no_such_exercise" in capsys.readouterr().err


def test_list_shows_all_twelve_with_their_lessons(capsys):
    assert check.main(["--list"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if not line.startswith(" ")]
    assert [(r[0], int(r[2])) for r in rows] == [
        ("linear", 2), ("relu", 3), ("sigmoid", 3), ("bce", 3), ("im2col", 4), ("col2im", 4), ("conv2d", 4),
        ("reparam", 6), ("kl", 7), ("adam", 8), ("train_step", 9), ("iwae", 13),
    ]  # fmt: skip


@pytest.mark.parametrize("with_hypothesis", [True, False])
def test_shape_cases_are_reproducible_and_in_range(monkeypatch, with_hypothesis):
    checker = sys.modules["_checker"]
    if not with_hypothesis:  # a student without the [dev] extra: a seeded generator instead
        monkeypatch.setitem(sys.modules, "hypothesis", None)

    def cases() -> list[dict[str, int]]:
        seen: list[dict[str, int]] = []
        assert checker.for_cases(lambda i: {"a": i(1, 4), "b": i(0, 9)}, seen.append, n=6) == 6
        return seen

    first = cases()
    assert first == cases() and len(first) == 6
    assert (
        all(1 <= c["a"] <= 4 and 0 <= c["b"] <= 9 for c in first)
        and len({tuple(c.values()) for c in first}) > 1
    )

    def fails(case: dict[str, int]) -> None:
        raise ValueError(f"student bug at {case}")

    with pytest.raises(ValueError, match="student bug"):  # raised again as it is, for the one-line report
        checker.for_cases(lambda i: {"a": i(1, 4)}, fails)


def test_train_step_signatures_start_from_minivaes_gradient():
    """The planted-bug gradients of train_step are minivae's parts with one change: with no change they
    equal the gradient minivae's own train_step applies, and each change moves them."""
    vae = sys.modules["_vae"]
    rng = np.random.default_rng(0)
    model, x, eps = vae.tiny_vae(), rng.random((4, 1, 4, 4)), rng.standard_normal((4, 3))
    reference, _ = vae.reference_step(model, x, eps, 0.3)
    assert np.allclose(vae.variant_grads(model, x, eps, 0.3), reference, rtol=1e-10, atol=1e-12)
    for change in ({"kl_weight": 1.0}, {"kl_weight": 0.0}, {"z_path": False}):
        assert not np.allclose(vae.variant_grads(model, x, eps, 0.3, **change), reference, rtol=1e-3)
