"""Task laws: downstream accuracy (or error) as a function of a model's loss on the task.

Step 2 of a two-step task prediction (`scaling.analysis.task_accuracy`): step 1 predicts a task
loss from (N, D) with a loss law (e.g. ``chinchilla``), step 2 maps the task loss to accuracy.

==================  ============================================  ======================
name                formula                                        covariates -> target
==================  ============================================  ======================
accuracy_sigmoid    a / (1 + exp(-k (L - L0))) + b                 L -> accuracy
error_exponential   eps - k exp(-gamma L)                          L -> error
==================  ============================================  ======================

Both are fitted by least squares on the target (``mse``): accuracies and errors lie in [0, 1]
and may be 0, so no logs are taken (``positive=("L",)``). The sigmoid's height ``a`` and floor
``b`` are bounded to (0, 1), accuracy's range (the paper states no bounds): without them a fit to a
ladder that has only seen the start of the jump runs ``a`` to any height (a band above 1.0).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from scaling.laws.law import Law, Param, register


def _sigmoid(p, x):
    return p["a"] / (1.0 + jnp.exp(-p["k"] * (x["L"] - p["L0"]))) + p["b"]


def _task_loss_design(rng, n):
    # task losses (answer NLL, nats) of small to mid-size models: 0.5 .. 2.5
    return {"L": rng.uniform(0.5, 2.5, size=n)}


def _simulate_accuracy(rng, params, x):
    # binomial sampling of 500 questions per point
    acc = np.asarray(params["a"] / (1.0 + np.exp(-params["k"] * (x["L"] - params["L0"]))) + params["b"])
    return rng.binomial(500, np.clip(acc, 0.0, 1.0)) / 500.0


accuracy_sigmoid = register(Law(
    name="accuracy_sigmoid",
    objective="mse",
    objective_source="least squares on accuracy (a sigmoid of the task loss fitted over the ladder "
                     "models' checkpoints): Bhagia et al. 2024, step 2 (unverified: the fitting "
                     "objective was not checked in the paper text)",
    params=(
        Param("a", lower=0.0, upper=1.0, grid=(0.3, 0.6, 0.9),
              doc="height of the jump (accuracy gained from chance to the ceiling), in (0, 1)"),
        Param("L0", "log", grid=(0.7, 1.2, 2.0), doc="task loss at the jump's midpoint"),
        Param("k", grid=(-3.0, -10.0, -30.0), doc="steepness; negative: accuracy rises as the loss falls"),
        Param("b", lower=0.0, upper=1.0, grid=(0.01, 0.25), doc="accuracy at high loss (chance level), in (0, 1)"),
    ),
    covariates=("L",),
    target="accuracy",
    fn=_sigmoid,
    positive=("L",),
    formula="Acc(L) = a / (1 + exp(-k (L - L0))) + b",
    citation="Bhagia et al. 2024, 'Establishing Task Scaling Laws via Compute-Efficient Model "
             "Ladders', arXiv:2412.04403, step 2 (task loss -> accuracy, a sigmoid fitted over "
             "intermediate checkpoints); the form is the one the paper states, its equation number "
             "(Eq. 2) is unverified",
    # Illustrative: a 4-choice task (chance 0.25) jumping to 0.95 around a task loss of 1.0.
    reference={"a": 0.7, "L0": 1.0, "k": -8.0, "b": 0.25},
    design=_task_loss_design,
    simulate=_simulate_accuracy,
))


def _error_exponential(p, x):
    return p["eps"] - p["k"] * jnp.exp(-p["gamma"] * x["L"])


def _simulate_error(rng, params, x):
    err = np.asarray(params["eps"] - params["k"] * np.exp(-params["gamma"] * x["L"]))
    return rng.binomial(500, np.clip(err, 0.0, 1.0)) / 500.0


error_exponential = register(Law(
    name="error_exponential",
    objective="mse",
    objective_source="least squares on error (unverified: the fitting objective of Gadre et al. "
                     "2024 was not checked in the paper text)",
    params=(
        Param("eps", lower=0.0, upper=1.0, grid=(0.5, 0.75, 0.9), doc="error at high loss (chance)"),
        Param("k", "log", grid=(1.0, 10.0, 100.0), doc="scale of the error reduction"),
        Param("gamma", "log", grid=(0.5, 2.0, 5.0), doc="rate at which error falls with the loss"),
    ),
    covariates=("L",),
    target="error",
    fn=_error_exponential,
    positive=("L",),
    formula="Err(L) = eps - k exp(-gamma L)",
    citation="Gadre et al. 2024, 'Language models scale reliably with over-training and on "
             "downstream tasks', arXiv:2403.08540: average top-1 error as an exponential decay in "
             "validation loss (their downstream law; equation number, Eq. 5, unverified)",
    # Illustrative: chance error 0.75 (4 choices), error 0.2 at L = 1.
    reference={"eps": 0.75, "k": 4.0, "gamma": 2.0},
    design=_task_loss_design,
    simulate=_simulate_error,
))

LAWS = (accuracy_sigmoid, error_exponential)
