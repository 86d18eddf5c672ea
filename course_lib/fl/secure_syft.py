"""Secure, differentially private federated learning over reviewed syft jobs (lesson 20).

Lesson 11 ran FedAvg as syft jobs, but each hospital's new weights reached the data scientist in
the clear. Lesson 13 showed how pairwise masks hide individual updates and how differential privacy
bounds what a model reveals. This module puts both *inside* the job every hospital reviews and runs
on its private data (the module :mod:`course_lib.fl.jobs.secure_round`, shipped as the job's
``main.py``; its text is :data:`SECURE_DP_TRAINING_SCRIPT`):

1. **DP-SGD on the private shard** (:func:`course_lib.dp.dpsgd.train_private`): every patient's
   gradient is clipped and noised, so the hospital's new model is (ε, δ)-DP with respect to each of
   its patients *before* anything leaves the hospital.
2. **Masking** (:func:`mask_update`): the update (new minus global weights) is fixed-point encoded
   and masked with the pair masks this hospital agrees with every other hospital by X25519
   (:func:`course_lib.fl.secure_aggregation.add_pairwise_masks`). One masked update is uniformly
   random; the hospitals' masked updates add up to the exact sum of their updates. An update
   holding NaN or ±inf is refused (the job fails, nothing is uploaded). Each pair mask is derived
   from the pair's shared secret *and* a digest of the whole job (:func:`job_digest`: the code,
   ``params.json`` with the round, keys, DP settings, lr, momentum and epochs, and the global
   weights' bytes), so the masks cancel only if every hospital ran the very same job.
3. Only the masked update leaves, as ``outputs/masked_update.b64``.

The scientist adds the masked uploads (:func:`unmask_average`) and moves the global model by the
average update (:func:`secure_dp_round`). A hospital's X25519 secret key is one of its *private*
dataset files (the job reads it like the shard, and it never leaves); its public key is in the
*mock* part, where the scientist reads every hospital's key to put them all in the job
(:func:`publish_with_keys`, :func:`read_public_keys`).

Whose privacy, whose budget
    The ε protects one *patient*. Patients are disjoint across hospitals, so each hospital's
    accountant covers its own patients and the federation's ε is the largest of them. It does *not*
    hide whether a whole hospital took part (client-level DP); with three hospitals that takes noise
    as large as a whole update on every coordinate — lesson 20 measures what that costs.
    The budget belongs to the hospitals: a :class:`BudgetReviewer` approves a job only if its code
    is the reviewed script, its DP parameters meet the hospital's :class:`PrivacyPolicy`, its other
    settings match what the hospitals fixed among themselves at set-up (:class:`Consortium`: the
    roster of public keys, the dataset, the model, the fixed-point scale), its round index is new,
    and it keeps the hospital within its ε budget. When the noise comes from a teaching seed the
    ε is not a guarantee (anyone with the seed can subtract the noise): :meth:`BudgetReviewer.
    epsilon_report` then says ``ε = ∞``.

Threat model: the scientist is the adversary. It is relied on to relay jobs and uploads
(availability) but not trusted with privacy, and it may be *malicious* in what it sends: whatever it
writes into ``params.json`` or the global weights, a job that passes review reveals only the masked
sum of DP updates — a key list other than the pinned roster (which would let it unmask a hospital,
or skip masking), a reused round index (identical masks, so two uploads' difference is the
difference of two updates), weaker DP settings, another dataset, or lr ≤ 0 are refused. Each
hospital reviews only its *own* job, so the scientist could also send the hospitals *different*
jobs that each pass review — hospitals 2 and 3 a tiny learning rate or other global weights, so
that the "sum" is hospital 1's update alone. Job binding stops that: the masks are keyed to the
digest of the job each hospital ran (:func:`job_digest`), so if any two hospitals got different
jobs their masks do not cancel and the sum is uniformly random — the round fails instead of
leaking. The hospitals are honest-but-curious towards each other. Not covered: dropouts (every
hospital must upload for the masks to cancel — lesson 13's protocol adds recovery); collusion of
the scientist with hospitals (a colluding hospital's own update, subtracted from the sum, gives the
scientist the sum of the other hospitals' updates — with three hospitals, the sum of the two
others; with two colluders, the third's update); global weights chosen, the same for everyone, so
that training reveals something about the data (secure aggregation hides who contributed what,
not what the sum reveals — DP bounds that); and the roster itself must reach each hospital over a
channel the scientist cannot alter (:func:`exchange_public_keys` models that set-up). Each hospital
counts equally in the average: weighting by shard size would reveal the sizes.
"""

from __future__ import annotations

import binascii
import copy
import hashlib
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import torch
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from course_lib.dp.accounting import RDPAccountant
from course_lib.fl import syft_bridge as sb
from course_lib.fl.secure_aggregation import (
    add_pairwise_masks,
    check_finite_update,
    decode_fixed_point,
    encode_fixed_point,
    generate_key_pair,
)
from course_lib.randomness import InsecureSeededRandom, RandomSource, SecureRandom
from course_lib.validation import (
    as_integer,
    check_int_in_range,
    check_nonnegative,
    check_nonnegative_int,
    check_positive,
    check_positive_int,
    is_integer,
)

if TYPE_CHECKING:
    from syft_job.job import JobInfo

__all__ = [
    "SECRET_KEY_FILE",
    "PUBLIC_KEY_FILE",
    "SECURE_DP_TRAINING_SCRIPT",
    "SECURE_JOB_DATA_FILES",
    "SECURE_JOB_FILES",
    "PrivacyPolicy",
    "Consortium",
    "exchange_public_keys",
    "epsilon_label",
    "BudgetReviewer",
    "SecureRoundResult",
    "publish_with_keys",
    "read_public_keys",
    "hospital_index",
    "job_random_source",
    "job_digest",
    "job_digest_of",
    "read_job_files",
    "mask_update",
    "unmask_average",
    "write_secure_job",
    "secure_dp_round",
]

#: Private dataset file holding a hospital's X25519 secret key (hex); it never leaves the hospital.
SECRET_KEY_FILE = "secagg_secret_key.hex"
#: Mock (public) dataset file holding the hospital's X25519 public key (hex).
PUBLIC_KEY_FILE = "secagg_public_key.hex"

#: The job every hospital runs in a round: the source text of the module
#: :mod:`course_lib.fl.jobs.secure_round`, shipped unchanged as the job's ``main.py`` and the only
#: code a :class:`BudgetReviewer` approves.
SECURE_DP_TRAINING_SCRIPT: str = sb.job_source("course_lib.fl.jobs.secure_round")

#: Files of a secure training job besides ``main.py``.
SECURE_JOB_DATA_FILES = ("params.json", "global_model.b64")
#: Every file of a secure training job: all of them are bound into its masks (:func:`job_digest`).
SECURE_JOB_FILES = ("main.py", *SECURE_JOB_DATA_FILES)


# -- the hospitals' privacy terms ---------------------------------------------------------------


@dataclass(frozen=True)
class PrivacyPolicy:
    """The DP terms the hospitals agreed to: a patient-level (ε, δ) budget and the DP-SGD settings
    that spend it (σ at least ``noise_multiplier``, sampling rate at most ``sample_rate``).

    ``allow_seeded_noise`` accepts jobs whose noise comes from a *seeded* generator: anyone who
    knows the seed can recompute and subtract the noise, so this is **INSECURE** — only for a
    lesson whose numbers must repeat.
    """

    epsilon_budget: float
    delta: float
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    allow_seeded_noise: bool = False

    def __post_init__(self) -> None:
        check_positive(self.epsilon_budget, "epsilon_budget")
        check_positive(self.noise_multiplier, "noise_multiplier")
        check_positive(self.max_grad_norm, "max_grad_norm")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must lie in (0, 1), got {self.delta}")
        if not 0 < self.sample_rate <= 1:
            raise ValueError(f"sample_rate is a probability in (0, 1], got {self.sample_rate}")

    def epsilon(self, epochs: int) -> float:
        """ε after ``epochs`` epochs of DP-SGD under this policy (RDP accountant)."""
        accountant = RDPAccountant()
        if epochs > 0:
            accountant.step(
                noise_multiplier=self.noise_multiplier,
                sample_rate=self.sample_rate,
                steps=epochs * round(1 / self.sample_rate),
            )
        return accountant.get_epsilon(self.delta)

    def problems_with(self, params: dict[str, Any]) -> list[str]:
        """Why a job's ``params`` break this policy (empty when they meet it)."""
        required = ("noise_multiplier", "max_grad_norm", "sample_rate", "delta", "epochs")
        malformed = [
            key
            for key in required
            if not _is_number(params.get(key))
            or not 0 < params[key] < math.inf  # compared without float(): 10**400 overflows it
            or not _fits_a_float(params[key])
            or (key == "epochs" and not is_integer(params[key]))
        ]
        if malformed:
            return [f"missing or malformed parameters: {', '.join(malformed)}"]
        problems = []
        if params["noise_multiplier"] < self.noise_multiplier:
            problems.append(f"noise multiplier below the agreed {self.noise_multiplier}")
        if params["max_grad_norm"] > self.max_grad_norm:
            problems.append(f"clipping bound above the agreed {self.max_grad_norm}")
        if params["sample_rate"] > self.sample_rate:
            problems.append(f"sampling rate above the agreed {self.sample_rate}")
        if params["delta"] != self.delta:
            problems.append(f"δ differs from the agreed {self.delta}")
        if params.get("noise_seed") is not None and not self.allow_seeded_noise:
            problems.append("seeded (removable) noise, which this hospital does not allow")
        return problems


def _is_number(value: object) -> TypeGuard[numbers.Real]:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _fits_a_float(value: numbers.Real) -> bool:
    try:
        return math.isfinite(float(value))
    except (OverflowError, ValueError):
        return False


def _short(value: object) -> str:
    """``repr`` of a job's value, cut short (a JSON integer can have thousands of digits)."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a huge integer"
    return text if len(text) <= 60 else text[:57] + "..."


def epsilon_label(epsilon: float, *, seeded: bool) -> str:
    """How a privacy report states ε: ``"ε = 3.64"`` when the DP noise was secret, and
    ``"ε = ∞ — teaching seed (3.64 with secure noise)"`` when it came from a seed — anyone who
    knows the seed can recompute the noise and subtract it, so the run protects nobody."""
    if seeded:
        return f"ε = ∞ — teaching seed ({epsilon:.2f} with secure noise)"
    return f"ε = {epsilon:.2f}"


@dataclass(frozen=True)
class Consortium:
    """What the hospitals fix among themselves at set-up — not through the scientist — and every
    job must match exactly.

    - ``public_keys``: the *roster*, every hospital's X25519 public key (hex) in order. A job
      whose key list differs would mask against someone else (an attacker's key in the list
      unmasks the hospital's update for the attacker) or not at all (a list with only the
      hospital's own key), so it is refused.
    - ``dataset``: the dataset the jobs may read; ``model``: the class of
      :mod:`course_lib.models` they train (and the global weights must be that model's, finite —
      DP-SGD's guarantee holds from any starting weights, so this checks well-formedness, not
      privacy); ``frac_bits``: the fixed-point scale of the masked uploads.

    The job's training settings (``lr`` > 0, ``momentum`` in [0, 1)) are only checked for range:
    one hospital cannot see another's job, so what makes them *the same for every hospital* is the
    job binding of the masks (:func:`job_digest`), not this review.
    """

    public_keys: tuple[str, ...]
    dataset: str
    model: str = "MLP"
    frac_bits: int = 24

    def __post_init__(self) -> None:
        keys = tuple(self.public_keys)
        object.__setattr__(self, "public_keys", keys)
        if len(keys) < 2:
            raise ValueError("a consortium needs at least two hospitals' public keys")
        for key in keys:
            if not isinstance(key, str) or len(key) != 64:
                raise ValueError(f"a public key is 64 hex digits, got {key!r}")
            bytes.fromhex(key)
        if len(set(keys)) != len(keys):
            raise ValueError("the roster holds the same public key twice")
        import course_lib.models

        if not isinstance(getattr(course_lib.models, self.model, None), type):
            raise ValueError(f"{self.model!r} is not a model class of course_lib.models")
        frac_bits = check_int_in_range(self.frac_bits, "frac_bits", 8, 40)
        object.__setattr__(self, "frac_bits", frac_bits)

    def problems_with(self, params: dict[str, Any], global_model_b64: str) -> list[str]:
        """Why a job's ``params`` and weights differ from these terms (empty when they match)."""
        problems = []
        keys = params.get("public_keys")
        if not isinstance(keys, list) or keys != list(self.public_keys):
            problems.append(self._roster_problem(keys))
        for name in ("dataset", "model", "frac_bits"):
            if params.get(name) != getattr(self, name) or isinstance(params.get(name), bool):
                problems.append(
                    f"{name} {params.get(name)!r} is not the agreed {getattr(self, name)!r}"
                )
        lr, momentum = params.get("lr"), params.get("momentum")
        # compared without float(): a JSON integer such as 10**400 overflows a float
        if not _is_number(lr) or not 0 < params["lr"] < math.inf:
            problems.append(f"lr must be a finite number > 0, got {_short(lr)}")
        elif not _fits_a_float(lr):
            problems.append(f"lr is too large for a float: {_short(lr)}")
        if not _is_number(momentum) or not 0 <= params["momentum"] < 1:
            problems.append(f"momentum must be a finite number in [0, 1), got {_short(momentum)}")
        if not problems:
            problems.extend(self._weight_problems(global_model_b64))
        return problems

    def _roster_problem(self, keys: Any) -> str:
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            return "the job's key list is missing or malformed"
        unknown = [k for k in keys if k not in self.public_keys]
        missing = [k for k in self.public_keys if k not in keys]
        detail = [f"{len(keys)} key(s) where the roster has {len(self.public_keys)}"]
        if unknown:
            detail.append(f"{len(unknown)} key(s) not in the roster")
        if missing:
            detail.append(f"{len(missing)} roster key(s) left out")
        if len(keys) == 1 and not unknown:
            detail.append("only one key: the update would leave unmasked")
        if not unknown and not missing and len(keys) == len(self.public_keys):
            detail = ["the same keys in another order or repeated"]
        return (
            "the job's key list differs from the roster pinned at set-up ("
            + "; ".join(detail)
            + ")"
        )

    def _weight_problems(self, global_model_b64: str) -> list[str]:
        import course_lib.models

        expected = getattr(course_lib.models, self.model)().state_dict()
        try:
            state = sb.decode_state(global_model_b64)
        except (binascii.Error, ValueError, RuntimeError, EOFError) as error:
            return [f"the global weights cannot be read ({type(error).__name__})"]
        if (
            not isinstance(state, dict)
            or list(state) != list(expected)
            or any(
                not isinstance(state[k], torch.Tensor) or state[k].shape != v.shape
                for k, v in expected.items()
            )
        ):
            return [f"the global weights are not a {self.model}'s"]
        bad = [k for k, v in state.items() if not bool(torch.isfinite(v).all())]
        return [f"the global weights hold NaN or ±inf in {', '.join(bad)}"] if bad else []


def exchange_public_keys(private_dirs: Sequence[str | Path]) -> tuple[str, ...]:
    """Set-up, among the hospitals themselves: each derives its public key from its own secret key
    file (in its private folder, as :func:`publish_with_keys` wrote it) and hands it to the others
    directly — in person or over a signed channel, *not* through the scientist. Returns the roster
    for :class:`Consortium`, in the order of ``private_dirs``."""
    return tuple(
        _public_key_hex(bytes.fromhex((Path(d) / SECRET_KEY_FILE).read_text().strip()))
        for d in private_dirs
    )


class BudgetReviewer:
    """The hospitals' review of a secure DP training job (pass it to :func:`secure_dp_round`).

    A job is approved only if

    - its code is exactly :data:`SECURE_DP_TRAINING_SCRIPT` from ``scientist``;
    - its DP parameters meet ``policy`` (:meth:`PrivacyPolicy.problems_with`);
    - its key list, dataset, model, fixed-point scale and weights match ``consortium``
      (:meth:`Consortium.problems_with`) — whatever the scientist writes into ``params.json``;
    - its round index is a new one for this hospital (the same index means the same masks);
    - running it keeps the hospital within its ε budget.

    A reviewer sees only its own hospital's job. That the other hospitals got the *same* job is
    enforced by the job itself: its masks are keyed to :func:`job_digest`, so a round in which the
    scientist sent different jobs yields a uniformly random sum, not anyone's update.

    One object plays every hospital's reviewer here: each hospital has its *own* accountant
    (``accountants[email]``, stepped when it approves) and its own set of approved rounds, and
    keeps them for as long as its keys live. ``decisions`` records every verdict with its reason.
    """

    def __init__(self, policy: PrivacyPolicy, consortium: Consortium, *, scientist: str) -> None:
        if not isinstance(consortium, Consortium):
            raise TypeError("consortium must be a Consortium (the terms fixed at set-up)")
        self.policy = policy
        self.consortium = consortium
        self.accountants: dict[str, RDPAccountant] = {}
        self.rounds_approved: dict[str, set[int]] = {}
        self.seeded: dict[str, bool] = {}
        self.decisions: list[tuple[str, str, bool, str]] = []
        self._same_code = sb.approve_if_code_is(
            {"main.py": SECURE_DP_TRAINING_SCRIPT},
            data_files=SECURE_JOB_DATA_FILES,
            scientist=scientist,
        )

    def epsilon_spent(self, hospital: str) -> float:
        """ε of this hospital's patients from its accountant (0 before its first job) — what the
        noise guarantees if it is secret; see :meth:`epsilon_report`."""
        return self.accountants.get(hospital, RDPAccountant()).get_epsilon(self.policy.delta)

    def epsilon_report(self, hospital: str) -> str:
        """The hospital's ε as a report should state it (:func:`epsilon_label`): ``∞`` once a job
        it approved drew its noise from a teaching seed."""
        return epsilon_label(self.epsilon_spent(hospital), seeded=self.seeded.get(hospital, False))

    def _decide(self, hospital: str, job_name: str, approved: bool, reason: str) -> bool:
        self.decisions.append((hospital, job_name, approved, reason))
        return approved

    def _round_problem(self, hospital: str, round_index: Any) -> str | None:
        if not is_integer(round_index) or round_index < 0:
            return f"round index {round_index!r} is not a non-negative integer"
        if round_index in self.rounds_approved.get(hospital, set()):
            return (
                f"round index {round_index} was already approved: reusing it reuses the masks, and "
                "the difference of two uploads would be the difference of two updates"
            )
        return None

    def __call__(self, job: JobInfo) -> bool:
        hospital, name = job.datasite_owner_email, job.name
        if not self._same_code(job):
            return self._decide(hospital, name, False, "the code is not the reviewed script")
        code_dir = Path(job.code_dir)
        try:  # ValueError: not JSON, not UTF-8, or an integer of more than 4300 digits
            params = json.loads((code_dir / "params.json").read_bytes())
            weights = (code_dir / "global_model.b64").read_bytes().decode("ascii")
        except ValueError as error:
            reason = f"params.json or global_model.b64 cannot be read ({type(error).__name__})"
            return self._decide(hospital, name, False, reason)
        if not isinstance(params, dict):
            return self._decide(hospital, name, False, "params.json is not a JSON object")
        problems = self.policy.problems_with(params)
        problems += self.consortium.problems_with(params, weights)
        round_problem = self._round_problem(hospital, params.get("round"))
        if round_problem:
            problems.append(round_problem)
        if problems:
            return self._decide(hospital, name, False, "; ".join(problems))
        after = copy.deepcopy(self.accountants.get(hospital, RDPAccountant()))
        q = params["sample_rate"]
        try:  # the job's numbers are the scientist's: a review refuses, it never raises
            after.step(
                noise_multiplier=params["noise_multiplier"],
                sample_rate=q,
                steps=params["epochs"] * round(1 / q),
            )
            epsilon = after.get_epsilon(self.policy.delta)
        except (OverflowError, ValueError) as error:
            reason = f"the privacy accountant cannot evaluate this job ({type(error).__name__})"
            return self._decide(hospital, name, False, reason)
        if not epsilon <= self.policy.epsilon_budget:  # NaN is refused too
            shown = f"{epsilon:.2f}" if epsilon < 1e6 else f"{epsilon:.3g}"
            reason = f"ε would reach {shown} > budget {self.policy.epsilon_budget}"
            return self._decide(hospital, name, False, reason)
        self.accountants[hospital] = after
        self.rounds_approved.setdefault(hospital, set()).add(params["round"])
        seeded = params.get("noise_seed") is not None
        self.seeded[hospital] = self.seeded.get(hospital, False) or seeded
        return self._decide(hospital, name, True, f"within budget: ε = {epsilon:.2f}")


# -- keys: secret in the private part, public in the mock part ----------------------------------


def publish_with_keys(
    federation: sb.Federation,
    name: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    parts: Sequence[torch.Tensor],
    *,
    rng: RandomSource | None = None,
    mock_size: int = 32,
    seed: int = 0,
) -> list[Path]:
    """Each hospital makes an X25519 key pair and publishes dataset ``name``: private part = its
    shard and its secret key, mock part = noise images and its *public* key. Returns the private
    staging folders (as :func:`~course_lib.fl.syft_bridge.publish_shards`). Keys come from ``rng``
    (secure when None)."""
    keys = [generate_key_pair(rng) for _ in federation.owners]
    return sb.publish_shards(
        federation,
        name,
        images,
        labels,
        parts,
        mock_size=mock_size,
        seed=seed,
        private_extras=[{SECRET_KEY_FILE: secret.hex()} for secret, _ in keys],
        mock_extras=[{PUBLIC_KEY_FILE: public.hex()} for _, public in keys],
    )


def read_public_keys(federation: sb.Federation, name: str) -> list[str]:
    """The scientist reads every hospital's public key (hex) from the mock part of ``name``."""
    keys = []
    for email in federation.owner_emails:
        files = {path.name: path for path in federation.mock_files(name, owner=email)}
        if PUBLIC_KEY_FILE not in files:
            raise ValueError(f"{email} published {name!r} without {PUBLIC_KEY_FILE}")
        keys.append(files[PUBLIC_KEY_FILE].read_text().strip())
    return keys


def hospital_index(secret_key: bytes, public_keys: Sequence[str]) -> int:
    """This hospital's position in the job's key list, found from its own secret key.

    Raises ``ValueError`` if its public key is missing: the masks would not cancel, or someone
    swapped the keys, so the hospital must not upload."""
    mine = _public_key_hex(secret_key)
    if mine not in public_keys:
        raise ValueError(
            "this hospital's public key is not in the job's key list: refusing to mask and upload"
        )
    if len(set(public_keys)) != len(public_keys):
        raise ValueError("the job's key list contains the same public key twice")
    return list(public_keys).index(mine)


def _public_key_hex(secret_key: bytes) -> str:
    if not isinstance(secret_key, bytes) or len(secret_key) != 32:
        raise ValueError("an X25519 secret key is 32 bytes")
    return X25519PrivateKey.from_private_bytes(secret_key).public_key().public_bytes_raw().hex()


def job_random_source(params: dict[str, Any], secret_key: bytes) -> RandomSource:
    """The randomness of a hospital's DP-SGD in a job: secure unless the job names a
    ``noise_seed``; then a seed derived from it, the round and the hospital (**INSECURE**:
    reproducible for a lesson, and the noise is removable by anyone who knows the seed)."""
    if params.get("noise_seed") is None:
        return SecureRandom()
    index = hospital_index(secret_key, params["public_keys"])
    material = f"{params['noise_seed']}|{params['round']}|{index}".encode()
    return InsecureSeededRandom(int.from_bytes(hashlib.sha256(material).digest()[:8], "big"))


def job_digest(folder: str | Path) -> bytes:
    """SHA-256 of everything a secure job controls: the bytes of its :data:`SECURE_JOB_FILES` in
    ``folder`` — the code, ``params.json`` (round, key list, DP settings, lr, momentum, epochs,
    dataset, model, fixed-point scale, noise seed) and the global weights.

    The job passes it to :func:`mask_update`, which keys every pair mask to it. Each hospital
    reviews only its own job, so this is what makes the round's jobs the same everywhere: two
    hospitals that ran different jobs (by a single byte) derive different masks, which do not
    cancel, and the scientist's sum is uniformly random — the round fails instead of leaking.

    A job must not call this on its folder *after* using the files: whoever can write the folder
    could change a file between the use and the digest. The job reads every file once
    (:func:`read_job_files`) and digests and parses those same bytes (:func:`job_digest_of`).
    """
    return job_digest_of(read_job_files(folder))


def read_job_files(folder: str | Path) -> dict[str, bytes]:
    """The bytes of a secure job's :data:`SECURE_JOB_FILES` in ``folder``, each read once."""
    folder = Path(folder)
    return {name: (folder / name).read_bytes() for name in SECURE_JOB_FILES}


def job_digest_of(files: Mapping[str, bytes]) -> bytes:
    """:func:`job_digest` of a job's files already in memory (``{name: bytes}`` holding exactly
    :data:`SECURE_JOB_FILES`): the job digests the very bytes it then parses and runs on."""
    if not isinstance(files, Mapping) or set(files) != set(SECURE_JOB_FILES):
        raise ValueError(f"a secure job's files are exactly {SECURE_JOB_FILES}")
    digest = hashlib.sha256(b"course_lib secure-dp-fedavg job v1")
    for name in SECURE_JOB_FILES:
        data = files[name]
        if not isinstance(data, bytes):
            raise TypeError(f"{name} must be given as bytes, got {type(data).__name__}")
        digest.update(b"|%s|%d|" % (name.encode(), len(data)))
        digest.update(data)
    return digest.digest()


def _session(round_index: int, digest: bytes | None) -> bytes:
    session = b"secure-dp-fedavg round %d" % round_index
    return session if digest is None else session + b"|job " + digest.hex().encode()


def mask_update(
    update: torch.Tensor,
    secret_key: bytes,
    public_keys: Sequence[str],
    round_index: int,
    frac_bits: int = 24,
    *,
    job: bytes | None = None,
) -> torch.Tensor:
    """A hospital's masked upload: ``update`` fixed-point encoded (``frac_bits``) plus its pair
    masks with every other hospital for this round. ``job`` is the digest of the job being run
    (:func:`job_digest`; the secure job always passes it): the masks are derived from it too, so
    they cancel only among hospitals that ran the same job. Without it (``None``, for masking
    outside a job) the masks depend on the keys and the round alone. Values must stay small enough
    that the sum of all hospitals' encodings cannot wrap around (else ``ValueError``). An update
    holding NaN or ±inf is refused with a ``ValueError`` naming the hospital (its position in the
    key list): the job then fails and uploads nothing, rather than poison the sum.

    >>> from course_lib.fl.secure_aggregation import generate_key_pair
    >>> from course_lib.randomness import InsecureSeededRandom
    >>> rng = InsecureSeededRandom(0)
    >>> (sk1, pk1), (sk2, pk2) = generate_key_pair(rng), generate_key_pair(rng)
    >>> keys = [pk1.hex(), pk2.hex()]
    >>> a = mask_update(torch.tensor([0.25, -1.0]), sk1, keys, round_index=1)
    >>> b = mask_update(torch.tensor([0.75, 3.0]), sk2, keys, round_index=1)
    >>> unmask_average([a, b]).tolist()  # the masks cancel in the sum: [1.0, 2.0] / 2
    [0.5, 1.0]
    """
    if not isinstance(update, torch.Tensor) or not update.is_floating_point():
        raise TypeError("the update must be a floating-point tensor")
    round_index = check_nonnegative_int(round_index, "round_index")
    frac_bits = check_int_in_range(frac_bits, "frac_bits", 0, 52)
    if job is not None and (not isinstance(job, bytes) or len(job) != 32):
        raise TypeError("job must be a job's 32-byte SHA-256 digest (see job_digest)")
    index = hospital_index(secret_key, public_keys)
    check_finite_update(update, f"hospital {index + 1} of {len(public_keys)}")
    limit = 2.0 ** (62 - frac_bits) / len(public_keys)
    encoded = encode_fixed_point(update.flatten(), frac_bits, max_abs=limit)
    peers = {j: bytes.fromhex(key) for j, key in enumerate(public_keys)}
    return add_pairwise_masks(encoded, index, secret_key, peers, _session(round_index, job))


def unmask_average(masked_uploads: Sequence[torch.Tensor], frac_bits: int = 24) -> torch.Tensor:
    """The scientist's side: add the masked uploads in Z_2^64 (the masks cancel), decode, and
    divide by the number of hospitals. Every hospital of the round must be included, and all must
    have run the same job (:func:`job_digest`): otherwise the result is uniformly random."""
    if not masked_uploads:
        raise ValueError("no masked uploads to add up")
    shapes = {tuple(m.shape) for m in masked_uploads}
    if len(shapes) != 1 or any(m.dtype != torch.int64 for m in masked_uploads):
        raise ValueError("masked uploads must be int64 tensors of one shape")
    total = torch.zeros_like(masked_uploads[0])
    for masked in masked_uploads:
        total = total + masked  # int64 addition wraps around: arithmetic in Z_2^64
    return (decode_fixed_point(total, frac_bits) / len(masked_uploads)).to(torch.float32)


# -- the scientist's round ----------------------------------------------------------------------


@dataclass
class SecureRoundResult:
    """What the scientist got from one :func:`secure_dp_round`."""

    round_index: int
    #: the masked update each hospital uploaded (uniformly random on its own)
    masked_uploads: dict[str, torch.Tensor] = field(repr=False)
    #: their average, the only thing the masks let the scientist read
    average_update: torch.Tensor = field(repr=False)


def write_secure_job(
    folder: str | Path,
    model: nn.Module,
    *,
    dataset: str,
    round_index: int,
    public_keys: Sequence[str],
    policy: PrivacyPolicy,
    epochs: int,
    lr: float,
    momentum: float = 0.0,
    frac_bits: int = 24,
    noise_seed: int | None = None,
) -> Path:
    """Write a secure training job: ``main.py`` (:data:`SECURE_DP_TRAINING_SCRIPT`),
    ``params.json`` (the policy's DP settings, the keys, the round) and ``global_model.b64``."""
    # Python ints and floats: params.json is written with json, which has no NumPy types
    epochs = check_positive_int(epochs, "epochs")
    round_index = check_nonnegative_int(round_index, "round_index")
    frac_bits = check_int_in_range(frac_bits, "frac_bits", 8, 40)
    noise_seed = None if noise_seed is None else as_integer(noise_seed, "noise_seed")
    lr = check_positive(lr, "lr")
    momentum = check_nonnegative(momentum, "momentum")
    params = {
        "dataset": dataset,
        "round": round_index,
        "epochs": epochs,
        "lr": lr,
        "momentum": momentum,
        "noise_multiplier": policy.noise_multiplier,
        "max_grad_norm": policy.max_grad_norm,
        "sample_rate": policy.sample_rate,
        "delta": policy.delta,
        "public_keys": list(public_keys),
        "frac_bits": frac_bits,
        "noise_seed": noise_seed,
    }
    return sb.write_model_job(folder, SECURE_DP_TRAINING_SCRIPT, model, params)


def secure_dp_round(
    federation: sb.Federation,
    model: nn.Module,
    *,
    dataset: str,
    round_index: int,
    public_keys: Sequence[str],
    policy: PrivacyPolicy,
    review: sb.Reviewer,
    epochs: int,
    lr: float,
    momentum: float = 0.0,
    frac_bits: int = 24,
    noise_seed: int | None = None,
    job_name: str | None = None,
) -> SecureRoundResult:
    """One round: every hospital reviews and runs the secure DP job on its private data; the
    scientist adds the masked uploads and moves ``model`` (in place) by the average update.

    ``model`` must be a course_lib model without buffers (its parameters are its whole state).
    The scientist's arguments are not checked against the hospitals' terms here: that is each
    hospital's review (``review``, e.g. a :class:`BudgetReviewer`). ``job_name`` defaults to
    ``secure-dp-fedavg-round-{round_index}``. Raises
    :class:`~course_lib.fl.syft_bridge.JobFailedError`
    if a hospital rejects the job.
    """
    if federation.root is None:
        raise ValueError("secure_dp_round needs a mock federation")
    if list(model.buffers()):
        raise ValueError("secure_dp_round averages parameters only: use a model without buffers")
    job_name = f"secure-dp-fedavg-round-{round_index}" if job_name is None else job_name
    code = write_secure_job(
        federation.root / "jobs" / job_name,
        model,
        dataset=dataset,
        round_index=round_index,
        public_keys=public_keys,
        policy=policy,
        epochs=epochs,
        lr=lr,
        momentum=momentum,
        frac_bits=frac_bits,
        noise_seed=noise_seed,
    )
    report = sb.run_round(federation, code, job_name, review=review)
    uploads = {
        email: sb.decode_state(files["masked_update.b64"].read_text())["masked"]
        for email, files in report.outputs.items()
    }
    average = unmask_average(list(uploads.values()), frac_bits)
    with torch.no_grad():
        start = parameters_to_vector(model.parameters())
        vector_to_parameters(start + average, model.parameters())
    return SecureRoundResult(round_index, uploads, average)
