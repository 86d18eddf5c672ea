"""Toy databases for reasoning about privacy: neighbours, sensitivity, and two classic attacks.

A *database* here is a 1-D tensor with one entry per person (for example 1 = "has the condition").
Two databases are **neighbours** when one is the other with a single person removed; the
*parallel databases* of a database are all of its neighbours of that kind.

- The **sensitivity** of a query is the most its answer can change between neighbours. Measured on
  one database (:func:`empirical_sensitivity`) it is only a lower bound; differential privacy needs
  the worst case over *every* database (:func:`global_sensitivity` finds it by brute force for small
  databases; for real queries you derive it by hand, e.g. 1 for a count).
- The **differencing attack** (:func:`differencing_attack`) asks the same question with and without
  one person and subtracts: exact aggregate answers leak individuals.
- The **linkage attack** (:func:`linkage_attack`) joins a "de-identified" release with a public
  register on quasi-identifiers (ZIP code, birth year, sex): removing names is not anonymisation.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch

from course_lib.randomness import RandomSource, resolve_random_source
from course_lib.validation import as_integer, check_positive_int

__all__ = [
    "make_database",
    "remove_person",
    "parallel_databases",
    "empirical_sensitivity",
    "global_sensitivity",
    "differencing_attack",
    "DIAGNOSES",
    "QUASI_IDENTIFIERS",
    "make_population",
    "deidentify",
    "public_register",
    "uniqueness",
    "linkage_attack",
]

Query = Callable[[torch.Tensor], Any]
Record = dict[str, Any]


def _validate_database(database: torch.Tensor) -> torch.Tensor:
    if not isinstance(database, torch.Tensor):
        raise TypeError(f"a database is a 1-D tensor, got {type(database).__name__}")
    if database.dim() != 1:
        raise ValueError(
            f"a database is a 1-D tensor (one entry per person), got shape {tuple(database.shape)}"
        )
    return database


def make_database(n: int, p: float = 0.5, *, rng: RandomSource | None = None) -> torch.Tensor:
    """A database of ``n`` people, each with a yes/no attribute that is 1 with probability ``p``."""
    n = check_positive_int(n, "n")
    return resolve_random_source(rng).bernoulli(p, n).to(torch.int64)


def remove_person(database: torch.Tensor, index: int) -> torch.Tensor:
    """The neighbouring database without person ``index``."""
    database = _validate_database(database)
    index = as_integer(index, "index")
    if not 0 <= index < len(database):
        raise ValueError(
            f"index must be a person in the database (0..{len(database) - 1}), got {index!r}"
        )
    return torch.cat([database[:index], database[index + 1 :]])


def parallel_databases(database: torch.Tensor) -> list[torch.Tensor]:
    """Every neighbour of ``database``: entry ``i`` is the database without person ``i``."""
    database = _validate_database(database)
    return [remove_person(database, i) for i in range(len(database))]


def _answer(query: Query, database: torch.Tensor) -> float:
    answer = query(database)
    value = float(answer.item() if isinstance(answer, torch.Tensor) else answer)
    if not math.isfinite(value):
        raise ValueError(f"the query returned {value} on a database of {len(database)} people")
    return value


def empirical_sensitivity(query: Query, database: torch.Tensor) -> float:
    """The largest change in ``query`` when one person is removed from *this* database.

    A lower bound on the true (global) sensitivity: another database may move the answer more.
    """
    database = _validate_database(database)
    if len(database) < 2:
        raise ValueError("empirical sensitivity needs a database of at least 2 people")
    full = _answer(query, database)
    return max(abs(full - _answer(query, neighbour)) for neighbour in parallel_databases(database))


def global_sensitivity(query: Query, n: int, domain: Sequence[float] = (0, 1)) -> float:
    """The largest change in ``query`` between any database of ``n`` people (values in ``domain``)
    and any of its remove-one neighbours — the sensitivity DP needs, found by brute force.

    It tries ``len(domain) ** n`` databases, so ``n`` must be small.
    """
    n = check_positive_int(n, "n")
    if n < 2:
        raise ValueError("global sensitivity needs databases of at least 2 people")
    if len(domain) ** n * n > 2_000_000:
        raise ValueError(f"{len(domain)}^{n} databases are too many to enumerate; use a smaller n")
    worst = 0.0
    for values in itertools.product(domain, repeat=n):
        database = torch.tensor(values)  # CPU by design: a tiny enumerated database
        full = _answer(query, database)
        for neighbour in parallel_databases(database):
            worst = max(worst, abs(full - _answer(query, neighbour)))
    return worst


def differencing_attack(query: Query, database: torch.Tensor, index: int) -> float:
    """What two exact answers reveal about person ``index``: ``query(db) - query(db without them)``.

    For a sum query this *is* the person's value.
    """
    database = _validate_database(database)
    return _answer(query, database) - _answer(query, remove_person(database, index))


# -- the linkage attack on synthetic records -------------------------------------------------------

#: Columns that are not names yet, combined, often single a person out (Sweeney 2000).
QUASI_IDENTIFIERS = ("zip_code", "birth_year", "sex")

_FIRST_NAMES = (
    "Ada",
    "Ben",
    "Chloe",
    "Dev",
    "Elif",
    "Femi",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
    "Kira",
)
_SURNAMES = (
    "Adams",
    "Baker",
    "Chen",
    "Diaz",
    "Evans",
    "Garcia",
    "Ito",
    "Jensen",
    "Lopez",
    "Okafor",
)
#: Every diagnosis :func:`make_population` can give a person: the public domain of a diagnosis
#: histogram or of the exponential mechanism's candidates (fixed here, never read off the records).
DIAGNOSES = ("healthy", "asthma", "diabetes", "hypertension", "depression", "HIV")


def make_population(
    n: int, *, zip_codes: int = 10, rng: RandomSource | None = None
) -> list[Record]:
    """``n`` synthetic people with a name, ZIP code, birth year, sex and a sensitive diagnosis."""
    n = check_positive_int(n, "n")
    zip_codes = check_positive_int(zip_codes, "zip_codes")
    rng = resolve_random_source(rng)
    people = []
    for _ in range(n):
        people.append(
            {
                "name": f"{_FIRST_NAMES[rng.randbelow(len(_FIRST_NAMES))]} "
                f"{_SURNAMES[rng.randbelow(len(_SURNAMES))]}",
                "zip_code": 10_000 + 7 * rng.randbelow(zip_codes),
                "birth_year": 1940 + rng.randbelow(66),
                "sex": "FM"[rng.randbelow(2)],
                "diagnosis": DIAGNOSES[rng.randbelow(len(DIAGNOSES))],
            }
        )
    return people


def deidentify(records: Sequence[Record], drop: Sequence[str] = ("name",)) -> list[Record]:
    """The naive "anonymised" release: the same records with the ``drop`` columns removed."""
    return [{key: value for key, value in record.items() if key not in drop} for record in records]


def public_register(
    population: Sequence[Record],
    fraction: float = 0.5,
    *,
    columns: Sequence[str] = ("name", *QUASI_IDENTIFIERS),
    rng: RandomSource | None = None,
) -> list[Record]:
    """A public list (think voter roll) naming a random ``fraction`` of the population."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction!r}")
    chosen = resolve_random_source(rng).bernoulli(fraction, len(population)).tolist()
    return [
        {key: person[key] for key in columns}
        for person, keep in zip(population, chosen, strict=True)
        if keep
    ]


def uniqueness(records: Sequence[Record], keys: Sequence[str] = QUASI_IDENTIFIERS) -> float:
    """The fraction of records whose combination of ``keys`` no other record shares."""
    if not records:
        raise ValueError("uniqueness needs at least one record")
    counts = Counter(tuple(record[key] for key in keys) for record in records)
    return sum(counts[tuple(r[key] for key in keys)] == 1 for r in records) / len(records)


def linkage_attack(
    released: Sequence[Record],
    register: Sequence[Record],
    keys: Sequence[str] = QUASI_IDENTIFIERS,
) -> list[Record]:
    """Re-identify released records by joining them with a public register on ``keys``.

    A link is made only when the key combination is unique in *both* tables, so every link is a
    confident one; each returned record is the released record with the register's ``name`` added.
    """
    if not keys:
        raise ValueError("linkage_attack needs at least one column to join on")
    released_counts = Counter(tuple(r[k] for k in keys) for r in released)
    register_by_key: dict[tuple, list[Record]] = {}
    for person in register:
        register_by_key.setdefault(tuple(person[k] for k in keys), []).append(person)
    links = []
    for record in released:
        key = tuple(record[k] for k in keys)
        matches = register_by_key.get(key, [])
        if released_counts[key] == 1 and len(matches) == 1:
            links.append({"name": matches[0]["name"], **record})
    return links
