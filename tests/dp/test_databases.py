"""Databases, sensitivity, and the differencing and linkage attacks."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib.dp.databases import (
    QUASI_IDENTIFIERS,
    deidentify,
    differencing_attack,
    empirical_sensitivity,
    global_sensitivity,
    linkage_attack,
    make_database,
    make_population,
    parallel_databases,
    public_register,
    remove_person,
    uniqueness,
)
from course_lib.randomness import InsecureSeededRandom


def mean(db):
    return db.double().mean()


def test_parallel_databases_remove_each_person_once():
    db = torch.tensor([5, 6, 7, 8])
    parallels = parallel_databases(db)
    assert len(parallels) == 4
    assert [p.tolist() for p in parallels] == [[6, 7, 8], [5, 7, 8], [5, 6, 8], [5, 6, 7]]
    assert db.tolist() == [5, 6, 7, 8]  # the original is untouched


def test_make_database_is_seeded_and_has_the_right_rate():
    db = make_database(20_000, p=0.3, rng=InsecureSeededRandom(0))
    assert db.shape == (20_000,) and set(db.unique().tolist()) <= {0, 1}
    assert abs(db.double().mean().item() - 0.3) < 3.29 * (0.3 * 0.7 / 20_000) ** 0.5
    assert torch.equal(db, make_database(20_000, p=0.3, rng=InsecureSeededRandom(0)))


def test_empirical_sensitivity_of_sum_and_mean():
    db = torch.tensor([1, 0, 1, 1, 0])
    assert empirical_sensitivity(torch.sum, db) == 1
    # removing a 0 raises the mean from 3/5 to 3/4: the largest change is 0.15
    assert empirical_sensitivity(mean, db) == pytest.approx(0.15)


def test_empirical_sensitivity_is_only_a_lower_bound():
    all_zeros = torch.zeros(6, dtype=torch.int64)
    assert empirical_sensitivity(torch.sum, all_zeros) == 0  # ... yet the sum's sensitivity is 1
    assert global_sensitivity(torch.sum, 6) == 1


@pytest.mark.parametrize("n", [2, 5, 8])
def test_global_sensitivity_of_the_mean_is_one_over_n(n):
    # worst case: one 1 among zeros, removed -> mean goes from 1/n to 0
    assert global_sensitivity(mean, n) == pytest.approx(1 / n)


def test_global_sensitivity_over_a_wider_domain():
    assert global_sensitivity(torch.sum, 4, domain=(0, 3, 10)) == 10
    assert global_sensitivity(lambda db: db.max(), 4, domain=(0, 1, 2)) == 2


@settings(deadline=None, max_examples=40)
@given(st.lists(st.integers(0, 1), min_size=2, max_size=7))
def test_empirical_never_exceeds_global(values):
    db = torch.tensor(values)
    assert empirical_sensitivity(mean, db) <= global_sensitivity(mean, len(values)) + 1e-12


def test_differencing_attack_reveals_every_person():
    db = make_database(50, rng=InsecureSeededRandom(1))
    revealed = [differencing_attack(torch.sum, db, i) for i in range(len(db))]
    assert revealed == db.tolist()


def test_differencing_attack_on_a_mean_needs_the_size():
    db = torch.tensor([3.0, 9.0, 4.0])
    difference = differencing_attack(mean, db, 1)  # 16/3 - 7/2
    assert 3 * mean(db).item() - 2 * (mean(db).item() - difference) == pytest.approx(9.0)


def test_linkage_attack_reidentifies_correctly():
    population = make_population(1_000, rng=InsecureSeededRandom(2))
    released = deidentify(population)
    assert all("name" not in record for record in released)
    register = public_register(population, 0.5, rng=InsecureSeededRandom(3))
    links = linkage_attack(released, register)
    # expected links, counted independently: people unique in the population and on the register
    key = lambda r: tuple(r[k] for k in QUASI_IDENTIFIERS)  # noqa: E731
    population_keys = [key(p) for p in population]
    registered_names = {(key(r), r["name"]) for r in register}
    expected = {
        (key(p), p["name"])
        for p in population
        if population_keys.count(key(p)) == 1 and (key(p), p["name"]) in registered_names
    }
    assert {(key(link), link["name"]) for link in links} == expected
    assert len(links) > 100
    truth = {key(p): p for p in population}
    assert all(truth[key(link)]["diagnosis"] == link["diagnosis"] for link in links)


def test_uniqueness_by_hand():
    records = [
        {"zip_code": 1, "birth_year": 1980, "sex": "F"},
        {"zip_code": 1, "birth_year": 1980, "sex": "F"},
        {"zip_code": 2, "birth_year": 1980, "sex": "F"},
        {"zip_code": 1, "birth_year": 1981, "sex": "M"},
    ]
    assert uniqueness(records) == 0.5
    assert uniqueness(records, keys=("birth_year",)) == 0.25


def test_coarser_quasi_identifiers_are_less_unique():
    population = make_population(2_000, rng=InsecureSeededRandom(4))
    assert uniqueness(population) > uniqueness(population, keys=("zip_code", "sex")) == 0.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="1-D"):
        parallel_databases(torch.zeros(2, 2))
    with pytest.raises(TypeError, match="1-D tensor"):
        parallel_databases([1, 0])
    with pytest.raises(ValueError, match="index"):
        remove_person(torch.zeros(3), 3)
    with pytest.raises(ValueError, match="positive integer"):
        make_database(0)
    with pytest.raises(ValueError, match="too many"):
        global_sensitivity(torch.sum, 30)
    with pytest.raises(ValueError, match="at least 2"):
        empirical_sensitivity(torch.sum, torch.ones(1))
    with pytest.raises(ValueError, match="probability"):
        make_database(5, p=1.5)
    with pytest.raises(ValueError, match="fraction"):
        public_register(make_population(3), 0.0)


# -- the unit of privacy: a user with several records ----------------------------------------------


def test_user_sensitivity_exercise_accepts_right_and_refuses_record_level_answers(capsys):
    from course_lib.exercises import check

    assert check("04.user_sensitivity", lambda ids: torch.bincount(ids).max())
    assert check("04.user_sensitivity", lambda ids: torch.unique(ids, return_counts=True)[1].max())
    capsys.readouterr()
    # record-level thinking: "a count has sensitivity 1" — wrong once a user has several rows
    assert not check("04.user_sensitivity", lambda ids: 1)
    assert "visits by users" in capsys.readouterr().out
    assert not check("04.user_sensitivity", lambda ids: len(torch.unique(ids)))
    assert not check("04.user_sensitivity", lambda ids: None)


def test_removing_one_user_moves_a_count_by_their_number_of_records():
    # the claim of lesson 04: with the user as the unit, a count's sensitivity is the largest
    # number of records one user has, found by brute force over every user
    user_ids = torch.tensor([3, 1, 3, 3, 7, 1, 3])
    moves = [int((user_ids == u).sum()) for u in user_ids.unique()]
    assert max(moves) == 4 == int(torch.bincount(user_ids).max())
