"""Remedies for class imbalance, registered by name: the labels of a sweep's joint axis ``method``.

A trained method is a set of config overrides (every method knob set explicitly, so two methods
never differ by a default); a post-hoc method trains nothing: it is scored from a trained method's
saved logits, read through that trial's final metrics under a prefix (``la_``, ``thr_``, ``nobn_``),
and enters a sweep as a ``Derived`` arm. Defaults are the papers' and are stated here; none is tuned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from finalbn.errors import UserError
from finalbn.registry import Registry
from finalbn.sweep.spec import Axis, Contrast, Derived

# The joint axis whose labels are method names, and the method every other one is measured against.
METHOD_AXIS = "method"
FINAL_BN = "final_bn"
PLAIN = "plain"


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    reference: str
    defaults: str
    overrides: dict[str, Any]
    source: str = ""
    prefix: str = ""

    @property
    def post_hoc(self) -> bool:
        return bool(self.source)


METHODS: Registry[Method] = Registry("method")


def _knobs(
    final_norm: str = "none", weighted_loss: bool = False, loss: str = "cce", sampler: str = "shuffle"
) -> dict[str, Any]:
    """Every method knob, so that plain, weighted_loss and final_bn are the headline sweep's configs exactly."""
    return {
        "model.final_norm": final_norm,
        "train.weighted_loss": weighted_loss,
        "train.loss": loss,
        "train.sampler": sampler,
    }


# Trained methods, in the order sweeps list them (the registry itself lists names sorted).
TRAINED = (
    Method(PLAIN, "Softmax and cross-entropy on the imbalanced data, nothing done about it.", "", "", _knobs()),
    Method(
        "weighted_loss",
        "Cross-entropy weighted by inverse class frequency (the thesis' WL).",
        "Kocaman 2024, thesis ch. 4",
        "",
        _knobs(weighted_loss=True),
    ),
    Method(
        "logit_adjusted_loss",
        "Cross-entropy on logits + tau * log(training class prior); the plain logits are scored.",
        "Menon et al., ICLR 2021",
        "tau = 1",
        _knobs(loss="logit_adjusted"),
    ),
    Method(
        "balanced_softmax",
        "Softmax over logits + log(training class count); as a loss the same as logit_adjusted_loss at tau = 1.",
        "Ren et al., NeurIPS 2020",
        "",
        _knobs(loss="balanced_softmax"),
    ),
    Method(
        "focal",
        "Cross-entropy scaled by (1 - p_true)^gamma, easy examples down-weighted.",
        "Lin et al., ICCV 2017",
        "gamma = 2, no alpha",
        _knobs(loss="focal"),
    ),
    Method(
        "oversampling",
        "Class-balanced resampling: every batch drawn with replacement, each class equally likely.",
        "Buda et al., Neural Networks 2018",
        "same number of steps per epoch",
        _knobs(sampler="balanced"),
    ),
    Method(
        FINAL_BN,
        "A batch-norm layer on the output logits (the thesis' method).",
        "Kocaman 2024, thesis ch. 4",
        "",
        _knobs(final_norm="bn"),
    ),
)

# Post-hoc methods: no training of their own; each reads its source's trials under its prefix.
POST_HOC = (
    Method(
        "posthoc_logit_adjustment",
        "The plain model's logits - tau * log(training class prior) at test; no training change, no tuning.",
        "Menon et al., ICLR 2021",
        "tau = 1",
        {},
        source=PLAIN,
        prefix="la_",
    ),
    Method(
        "val_threshold",
        "The plain model's decision threshold chosen on the validation split.",
        "Buda et al., Neural Networks 2018",
        "",
        {},
        source=PLAIN,
        prefix="thr_",
    ),
    Method(
        "final_bn_removed",
        "The final BN model with its final BN removed at test.",
        "Kocaman 2024, thesis Table 4.6",
        "",
        {},
        source=FINAL_BN,
        prefix="nobn_",
    ),
    Method(
        "final_bn+val_threshold",
        "The final BN model's decision threshold chosen on the validation split.",
        "",
        "",
        {},
        source=FINAL_BN,
        prefix="thr_",
    ),
    Method(
        "final_bn+posthoc_logit_adjustment",
        "The final BN model's logits - tau * log(training class prior) at test.",
        "Menon et al., ICLR 2021",
        "tau = 1",
        {},
        source=FINAL_BN,
        prefix="la_",
    ),
)

for _method in (*TRAINED, *POST_HOC):
    METHODS.register(_method.name)(_method)

TRAINED_NAMES = tuple(method.name for method in TRAINED)


def method_axis(names: Sequence[str]) -> Axis:
    """The joint axis ``method``: each trained method's overrides, labelled by its name, in the order given."""
    for name in names:
        _trained(name)
    return Axis(METHOD_AXIS, tuple(dict(METHODS.get(name).overrides) for name in names), labels=tuple(names))


def derived_arms(trained_names: Sequence[str]) -> tuple[Derived, ...]:
    """Every post-hoc method whose source is among ``trained_names``, as an arm of the ``method`` axis."""
    return tuple(
        Derived(METHOD_AXIS, method.name, method.source, method.prefix)
        for method in POST_HOC
        if method.source in trained_names
    )


def baseline_contrasts(trained_names: Sequence[str]) -> tuple[Contrast, ...]:
    """The baselines sweep's contrasts among ``trained_names`` and their derived arms.

    First every other method (trained, then post-hoc) against final BN, treated = the method and
    control = final_bn, so a positive difference always means the method beats final BN (a forest
    plot of them reads one way); then the thesis' own claims with final BN as the treated arm:
    final_bn vs plain, and final_bn kept vs removed at test (final_bn vs final_bn_removed).
    Nothing when final_bn is not among the names.
    """
    if FINAL_BN not in trained_names:
        return ()
    others = [name for name in trained_names if name != FINAL_BN]
    others += [arm.label for arm in derived_arms(trained_names)]
    contrasts = [Contrast(METHOD_AXIS, name, FINAL_BN) for name in others]
    if PLAIN in trained_names:
        contrasts.append(Contrast(METHOD_AXIS, FINAL_BN, PLAIN))
    contrasts.append(Contrast(METHOD_AXIS, FINAL_BN, "final_bn_removed"))
    return tuple(contrasts)


def _trained(name: str) -> Method:
    method = METHODS.get(name)
    if method.post_hoc:
        raise UserError(f"{name} is scored from {method.source}'s trials: ask for {method.source}")
    return method
