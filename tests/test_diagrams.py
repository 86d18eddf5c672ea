"""The protocol charts say what the implementations do: same messages, same order, same parties.

Each test runs the course's implementation of a protocol and compares what crossed its (simulated)
network with the chart's list of messages in :mod:`course_lib.diagrams`; the last tests check that
the lessons show the current charts with their descriptions.
"""

from __future__ import annotations

import base64
import math
from pathlib import Path

import IPython.display
import nbformat
import pytest
import torch
from torch import nn

from course_lib.diagrams import (
    PROTOCOLS,
    Local,
    Message,
    Phase,
    Protocol,
    draw,
    png_bytes,
    show_protocol,
)
from course_lib.randomness import InsecureSeededRandom

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def wires(key: str) -> list[str]:
    return [m.wire for m in PROTOCOLS[key].messages]


# -- secure aggregation (lesson 13) ---------------------------------------------------------------


def test_secure_aggregation_chart_lists_the_rounds_secure_sum_sends_in_order() -> None:
    from course_lib.fl.secure_aggregation import secure_sum

    updates = [torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.0]), torch.tensor([2.0, 1.0])]
    result = secure_sum(updates, threshold=2, drop_before_upload=[2], rng=InsecureSeededRandom(0))
    assert result.total.tolist() == [1.5, -2.0]  # the run worked, and client 2 was left out
    assert list(result.transcript.messages) == wires("secure_aggregation")
    client, server = PROTOCOLS["secure_aggregation"].parties
    for message in PROTOCOLS["secure_aggregation"].messages:
        up = message.wire.endswith("(up)")
        assert (message.sender, message.receiver) == ((client, server) if up else (server, client))
    # four rounds, numbered 0-3 as in secure_sum's docstring and the lesson
    assert sorted({w[0] for w in wires("secure_aggregation")}) == ["0", "1", "2", "3"]
    phases = [e.text for e in PROTOCOLS["secure_aggregation"].events if isinstance(e, Phase)]
    assert [p.split(" ·")[0] for p in phases] == ["round 0", "round 1", "round 2", "round 3"]


# -- Beaver multiplication (lesson 16) ------------------------------------------------------------


def test_beaver_chart_matches_the_dealers_triple_and_the_one_opening_round() -> None:
    from course_lib.smpc import CommunicationLog, Dealer, Session

    chart = PROTOCOLS["beaver"]
    dealer_name, *party_names = chart.parties
    n = len(party_names)
    from_dealer = [m for m in chart.messages if m.sender == dealer_name]
    between = [m for m in chart.messages if m.sender != dealer_name]
    # the dealer sends each party one message; the parties send each other one message each
    assert sorted(m.receiver for m in from_dealer) == party_names
    assert len(between) == n * (n - 1)
    assert {(m.sender, m.receiver) for m in between} == {
        (a, b) for a in party_names for b in party_names if a != b
    }
    # offline: a Beaver triple is 3 values per party, what Dealer.beaver_triple sends
    numel = 4
    log = CommunicationLog(n)
    Dealer(n, InsecureSeededRandom(1), log).beaver_triple(torch.mul, (numel,), (numel,))
    assert log.total.offline_bytes == 8 * numel * sum(m.values for m in from_dealer)
    assert all(m.values == 3 for m in from_dealer)
    # online: SharedTensor's product opens ε and δ (two values) in its first round
    session = Session(n, rng=InsecureSeededRandom(2))
    x, y = session.share(torch.tensor([1.5, -2.0])), session.share(torch.tensor([4.0, 0.25]))
    session.log.reset()
    assert (x * y).reveal().tolist() == [6.0, -0.5]
    first = session.log.openings[0]
    assert first.operation == "mul" and first.sharing == "additive"
    assert len(first.shapes) == 2 and all(m.values == 2 for m in between)
    assert {m.wire for m in between} == {"open"}
    assert {m.wire for m in from_dealer} == {Dealer.beaver_triple.__name__}


def test_beaver_chart_formulas_give_shares_of_the_product() -> None:
    """The local steps the chart prints, computed on real shares, reconstruct x·y."""
    from course_lib.smpc import reconstruct, share

    rng = InsecureSeededRandom(3)
    x, y = torch.tensor([6, -7]), torch.tensor([7, 3])
    a, b = rng.int64((2,)), rng.int64((2,))
    (a0, a1), (b0, b1), (c0, c1) = share(a, 2, rng), share(b, 2, rng), share(a * b, 2, rng)
    (x0, x1), (y0, y1) = share(x, 2, rng), share(y, 2, rng)
    eps0, delta0, eps1, delta1 = x0 - a0, y0 - b0, x1 - a1, y1 - b1
    eps, delta = eps0 + eps1, delta0 + delta1
    z0 = c0 + eps * b0 + a0 * delta + eps * delta
    z1 = c1 + eps * b1 + a1 * delta
    assert reconstruct(torch.stack([z0, z1])).tolist() == [42, -21]
    notes = [e.text for e in PROTOCOLS["beaver"].events if isinstance(e, Local)]
    assert "z₀ = c₀ + ε·b₀ + a₀·δ + ε·δ" in notes[2] and notes[3].startswith(
        "z₁ = c₁ + ε·b₁ + a₁·δ"
    )


# -- DH-PSI and PIR (lesson 19) -------------------------------------------------------------------


def _evaluate(size: str, **counts: int) -> int:
    """``"16 + 32·|X| bytes"`` with |X| = counts["X"] ... as a number."""
    expression = size.removesuffix(" bytes").replace("·", "*")
    for name, value in counts.items():
        expression = expression.replace(f"|{name}|", str(value))
    assert set(expression) <= set("0123456789+*() "), expression
    return int(eval(expression))  # noqa: S307  (digits and + * only, checked above)


@pytest.mark.parametrize(("nx", "ny"), [(1, 1), (5, 9), (40, 3)])
def test_psi_chart_lists_the_two_messages_and_their_sizes(nx: int, ny: int) -> None:
    from course_lib.psi import private_set_intersection

    mine = [f"id-{i}" for i in range(nx)]
    theirs = [f"id-{i}" for i in range(nx - 1, nx - 1 + ny)]  # exactly one shared
    result = private_set_intersection(mine, theirs, rng=InsecureSeededRandom(4))
    assert result.intersection == {f"id-{nx - 1}".encode()}
    request, reply = PROTOCOLS["dh_psi"].messages
    assert result.messages == len(PROTOCOLS["dh_psi"].messages) == 2
    assert [request.wire, reply.wire] == [
        type(result.request).__name__,
        type(result.reply).__name__,
    ]
    client, server = PROTOCOLS["dh_psi"].parties
    assert (request.sender, reply.sender) == (client, server)
    assert _evaluate(request.detail, X=nx) == result.bytes_to_server == result.request.nbytes
    assert _evaluate(reply.detail, X=nx, Y=ny) == result.bytes_to_client == result.reply.nbytes


def test_pir_chart_counts_cols_ciphertexts_up_and_rows_down() -> None:
    from course_lib.he.paillier import generate_keypair
    from course_lib.psi import PIRClient, PIRServer

    public_key, private_key = generate_keypair(512)  # fast, NOT secure: message shapes only
    query_message, answer_message = PROTOCOLS["pir"].messages
    client_name, server_name = PROTOCOLS["pir"].parties
    assert (query_message.sender, answer_message.sender) == (client_name, server_name)
    assert query_message.detail == "cols = ⌈√n⌉ Paillier ciphertexts"
    assert answer_message.detail == "rows = ⌈n / cols⌉ ciphertexts"
    for n in (1, 7, 16, 17):
        records = [f"record {i}" for i in range(n)]
        server = PIRServer(records)
        client = PIRClient(public_key, private_key, rng=InsecureSeededRandom(n))
        wanted = n - 1
        query = client.query(wanted, n)
        answer = server.answer(query)
        assert client.decode(answer) == records[wanted].encode()
        cols = math.ceil(math.sqrt(n))  # the chart's "cols = ⌈√n⌉"
        assert len(query.selector) == server.cols == cols
        assert len(answer) == server.rows == math.ceil(n / cols)
        assert client._wanted == divmod(wanted, cols)  # "row r = i div cols, column c = i mod cols"
        assert query_message.wire == type(query).__name__
        assert answer_message.wire == PIRServer.answer.__name__


# -- split learning (lesson 14) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "u_shaped"), [("split_learning", False), ("split_learning_u", True)]
)
def test_split_learning_chart_is_what_splitnn_puts_on_the_wire(key: str, u_shaped: bool) -> None:
    from course_lib.fl.split_learning import SplitNN

    torch.manual_seed(0)
    client_part = nn.Sequential(nn.Linear(6, 5), nn.ReLU())
    server_part = nn.Sequential(nn.Linear(5, 4))
    head = nn.Linear(4, 3) if u_shaped else None
    if not u_shaped:
        server_part.append(nn.Linear(4, 3))
    split = SplitNN(client_part, server_part, client_head=head)
    split.compute_gradients(torch.randn(8, 6), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
    on_wire = [f"{direction}: {what}" for direction, what, _ in split.wire.entries]
    assert on_wire == wires(key)
    client, server = PROTOCOLS[key].parties
    for message in PROTOCOLS[key].messages:
        up = message.wire.startswith("client → server")
        assert (message.sender, message.receiver) == ((client, server) if up else (server, client))
    labels_sent = any("labels" in m.wire for m in PROTOCOLS[key].messages)
    assert labels_sent is not u_shaped


# -- the charts themselves ------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(PROTOCOLS))
def test_description_tells_every_step_in_order(key: str) -> None:
    protocol = PROTOCOLS[key]
    text = protocol.description
    assert text.startswith(f"Message-sequence chart of {protocol.title} between ")
    position = 0
    for event in protocol.events:
        if isinstance(event, Message):
            needle = f"{event.sender} sends {event.receiver}: {event.label}"
        elif isinstance(event, Local):
            needle = f"{event.party} computes locally: {event.text}"
        else:
            needle = event.text[1:]
        found = text.find(needle, position)
        assert found >= 0, f"{needle!r} missing or out of order"
        position = found + len(needle)
    assert ".png" not in text and len(text.split()) > 30


@pytest.mark.parametrize("key", sorted(PROTOCOLS))
def test_png_is_a_deterministic_image_sized_by_the_protocol(key: str) -> None:
    first, second = png_bytes(key), png_bytes(key)
    assert first.startswith(PNG_SIGNATURE) and first == second
    assert b"Software" not in first  # no matplotlib version inside
    figure = draw(key)
    rows = sum(2 if isinstance(e, Message) and e.detail else 1 for e in PROTOCOLS[key].events)
    assert figure.get_figheight() == pytest.approx(0.75 + (rows + 1) * 0.42)
    texts = {t.get_text() for t in figure.axes[0].texts}
    assert {m.label for m in PROTOCOLS[key].messages} <= texts
    assert set(PROTOCOLS[key].parties) <= texts


def test_show_protocol_outputs_the_png_with_its_description(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shown: list[tuple[tuple, dict]] = []
    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: shown.append((a, k)))
    show_protocol("pir")
    ((args, kwargs),) = shown
    (bundle,) = args
    assert kwargs == {"raw": True} and set(bundle) == {"image/png", "text/plain"}
    assert bundle["text/plain"] == PROTOCOLS["pir"].description
    assert base64.b64decode(bundle["image/png"]) == png_bytes("pir")


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="no chart named 'psi'"):
        draw("psi")
    with pytest.raises(TypeError, match="Protocol or a key"):
        png_bytes(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown parties"):
        Protocol("k", "t", ("a", "b"), (Message("a", "c", "x", "w"),), "s", 1)
    with pytest.raises(ValueError, match="to itself"):
        Protocol("k", "t", ("a", "b"), (Message("a", "a", "x", "w"),), "s", 1)
    with pytest.raises(ValueError, match="distinct parties"):
        Protocol("k", "t", ("a", "a"), (), "s", 1)


# -- the lessons show the current charts ----------------------------------------------------------


def _lesson(number: int) -> nbformat.NotebookNode:
    (path,) = NOTEBOOKS.glob(f"{number:02d}_*.ipynb")
    return nbformat.read(path, as_version=4)


@pytest.mark.parametrize("key", sorted(PROTOCOLS))
def test_lesson_shows_the_chart_with_its_current_description(key: str) -> None:
    protocol = PROTOCOLS[key]
    cells = [
        cell
        for cell in _lesson(protocol.lesson).cells
        if cell.cell_type == "code" and f'show_protocol("{key}")' in cell.source
    ]
    assert len(cells) == 1, f"lesson {protocol.lesson} should show the {key!r} chart once"
    images = [o for o in cells[0].outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1, "run the lesson: the chart's cell has no stored image"
    assert images[0].data["text/plain"] == protocol.description, "re-run the chart's cell"
    assert base64.b64decode(images[0].data["image/png"]).startswith(PNG_SIGNATURE)
