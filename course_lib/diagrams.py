"""Message-sequence charts of the course's protocols, drawn from one list of messages each.

Each protocol is a :class:`Protocol`: its parties and, in order, the :class:`Message` s they send
and the :class:`Local` computations between them (with :class:`Phase` labels such as "round 1").
The same list gives the chart (:func:`draw`, matplotlib, no network) and its text description
(:attr:`Protocol.description`, the alt text), and every message names what the course's
implementation calls it on the wire (:attr:`Message.wire`): ``tests/test_diagrams.py`` runs the
implementation and checks that it sends exactly these messages, in this order, between these
parties — so a chart cannot drift from the code it explains.

The charts (keys of :data:`PROTOCOLS`):

- ``"secure_aggregation"`` — Bonawitz et al.'s pairwise masking, as
  :func:`course_lib.fl.secure_aggregation.secure_sum` runs it (lesson 13);
- ``"beaver"`` — one multiplication with a dealer's Beaver triple
  (:mod:`course_lib.smpc`, lesson 16);
- ``"dh_psi"`` — Diffie–Hellman private set intersection (:mod:`course_lib.psi`, lesson 19);
- ``"pir"`` — private information retrieval with Paillier (:mod:`course_lib.psi`, lesson 19);
- ``"split_learning"`` and ``"split_learning_u"`` — one training step of vanilla and U-shaped
  split learning (:class:`course_lib.fl.split_learning.SplitNN`, lesson 14).

A lesson shows a chart with :func:`show_protocol`: the cell's output is the PNG image together with
its description as the plain-text alternative (the course website uses it as the image's alt text).
Stored as a cell *output*, the chart renders in Jupyter, in Colab when opened from GitHub and on the
site alike (markdown-cell attachments do not render in Colab, and data-URI images in markdown are
stripped by JupyterLab's sanitizer).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

from matplotlib.backend_bases import RendererBase
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

__all__ = [
    "PROTOCOLS",
    "Local",
    "Message",
    "Phase",
    "Protocol",
    "draw",
    "png_bytes",
    "show_protocol",
]


@dataclass(frozen=True)
class Message:
    """``sender`` sends ``receiver`` ``label`` (``detail``: a second, smaller line — its size).

    ``wire`` is the implementation's name for this message (a transcript round, a wire-log entry, a
    message class); ``values`` how many values it carries where the chart counts them (0 = not
    counted).
    """

    sender: str
    receiver: str
    label: str
    wire: str
    detail: str = ""
    values: int = 0


@dataclass(frozen=True)
class Local:
    """A computation ``party`` does on its own (nothing crosses the network)."""

    party: str
    text: str


@dataclass(frozen=True)
class Phase:
    """A label for the messages that follow (``"round 1 · share keys"``, ``"offline"``)."""

    text: str


Event = Message | Local | Phase


@dataclass(frozen=True)
class Protocol:
    """A protocol's chart: its ``parties`` (left to right) and ``events`` (top to bottom)."""

    key: str
    title: str
    parties: tuple[str, ...]
    events: tuple[Event, ...]
    summary: str  #: one sentence: who runs it and what it achieves
    lesson: int
    size: dict[str, float] = field(default_factory=dict)  #: layout overrides (``width``)

    def __post_init__(self) -> None:
        if len(set(self.parties)) != len(self.parties) or len(self.parties) < 2:
            raise ValueError(f"{self.key}: need two or more distinct parties, got {self.parties}")
        for event in self.events:
            named = (
                (event.sender, event.receiver)
                if isinstance(event, Message)
                else (event.party,)
                if isinstance(event, Local)
                else ()
            )
            unknown = [p for p in named if p not in self.parties]
            if unknown:
                raise ValueError(f"{self.key}: {event} names unknown parties {unknown}")
            if isinstance(event, Message) and event.sender == event.receiver:
                raise ValueError(f"{self.key}: {event} is sent by a party to itself")

    @property
    def messages(self) -> list[Message]:
        """The messages, in the order they are sent."""
        return [e for e in self.events if isinstance(e, Message)]

    @property
    def description(self) -> str:
        """The chart in words (its alt text): the summary, then every step in order."""
        steps, number = [], 0
        for event in self.events:
            if isinstance(event, Phase):
                steps.append(f"{event.text[0].upper()}{event.text[1:]}:")
                continue
            number += 1
            if isinstance(event, Message):
                extra = f" ({event.detail})" if event.detail else ""
                steps.append(
                    f"{number}. {event.sender} sends {event.receiver}: {event.label}{extra}."
                )
            else:
                steps.append(f"{number}. {event.party} computes locally: {event.text}.")
        return (
            f"Message-sequence chart of {self.title} between {_join(self.parties)}. "
            f"{self.summary} " + " ".join(steps)
        )


def _join(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


# -- the protocols ------------------------------------------------------------------------------

_CLIENT, _SERVER = "client i (each of n)", "server"

SECURE_AGGREGATION = Protocol(
    key="secure_aggregation",
    title="secure aggregation with pairwise masks (Bonawitz et al. 2017)",
    parties=(_CLIENT, _SERVER),
    lesson=13,
    summary=(
        "Four rounds; every message between clients passes through the server. A server that "
        "follows the protocol (honest-but-curious) learns only the sum of the included updates; "
        "with no signatures or consistency round, one that substitutes keys or lies about who "
        "survived is outside this threat model."
    ),
    events=(
        Phase("round 0 · advertise keys"),
        Message(_CLIENT, _SERVER, "two X25519 public keys", "0 advertise keys (up)"),
        Message(_SERVER, _CLIENT, "every client's public keys", "0 key list (down)"),
        Phase("round 1 · share keys"),
        Local(_CLIENT, "Shamir-share mask key and self-mask seed (t of n)"),
        Message(
            _CLIENT,
            _SERVER,
            "share j of both, AES-GCM encrypted for client j",
            "1 share keys (up)",
            "the server relays ciphertexts it cannot read",
        ),
        Message(_SERVER, _CLIENT, "the shares other clients made for i", "1 shares (down)"),
        Phase("round 2 · masked input"),
        Local(_CLIENT, "y = x + self-mask + Σ pair masks (+ to higher ids, − to lower)"),
        Message(
            _CLIENT,
            _SERVER,
            "masked update y",
            "2 masked input (up)",
            "uniform in Z_2^64; a client that drops out sends nothing",
        ),
        Phase("round 3 · unmasking"),
        Message(_SERVER, _CLIENT, "survivor list: included and dropped", "3 survivor list (down)"),
        Message(
            _CLIENT,
            _SERVER,
            "self-mask shares of included, mask-key shares of dropped",
            "3 unmasking shares (up)",
            "never both kinds for one client",
        ),
        Local(_SERVER, "Σ y − self-masks ± orphaned pair masks = Σ x"),
    ),
)

_DEALER, _P0, _P1 = "dealer", "party 0", "party 1"

BEAVER = Protocol(
    key="beaver",
    title="Beaver multiplication with a dealer",
    parties=(_DEALER, _P0, _P1),
    lesson=16,
    summary=(
        "Two parties hold additive shares of x and y; a dealer who sees no input sends shares of a "
        "random triple beforehand, and one round of openings gives shares of x·y."
    ),
    events=(
        Phase("offline · before the inputs exist"),
        Message(
            _DEALER, _P0, "a₀, b₀, c₀", "beaver_triple", "shares of random a, b and c = a·b", 3
        ),
        Message(_DEALER, _P1, "a₁, b₁, c₁", "beaver_triple", "", 3),
        Phase("online · one round: both send at once"),
        Local(_P0, "ε₀ = x₀ − a₀,  δ₀ = y₀ − b₀"),
        Local(_P1, "ε₁ = x₁ − a₁,  δ₁ = y₁ − b₁"),
        Message(_P0, _P1, "ε₀, δ₀", "open", "uniformly random: reveal nothing", 2),
        Message(_P1, _P0, "ε₁, δ₁", "open", "", 2),
        Local(_P0, "ε = ε₀ + ε₁, δ = δ₀ + δ₁;  z₀ = c₀ + ε·b₀ + a₀·δ + ε·δ"),
        Local(_P1, "z₁ = c₁ + ε·b₁ + a₁·δ   (z₀ + z₁ = x·y)"),
    ),
)

_A, _B = "hospital A (client)", "hospital B (server)"

DH_PSI = Protocol(
    key="dh_psi",
    title="Diffie–Hellman private set intersection",
    parties=(_A, _B),
    lesson=19,
    summary=(
        "A learns which of its identifiers x ∈ X B also holds, and |Y|; B learns only |X|. "
        "a and b are secret scalars, H hashes into the group ristretto255."
    ),
    events=(
        Local(_A, "secret a; shuffle X"),
        Message(
            _A,
            _B,
            "PSIRequest: request id, a·H(x) for each x ∈ X",
            "PSIRequest",
            "16 + 32·|X| bytes",
        ),
        Local(_B, "secret b; b·(a·H(x)) in the same order; b·H(y) shuffled"),
        Message(
            _B,
            _A,
            "PSIReply: digest of the request, b·a·H(x), b·H(y)",
            "PSIReply",
            "32 + 32·(|X| + |Y|) bytes",
        ),
        Local(_A, "check the digest; a·(b·H(y)); keep each x whose b·a·H(x) is among them"),
    ),
)

_PC, _PS = "client (wants record i)", "server (table of n records)"

PIR = Protocol(
    key="pir",
    title="private information retrieval with Paillier encryption",
    parties=(_PC, _PS),
    lesson=19,
    summary=(
        "The client fetches record i of an n-record table laid out as rows × cols "
        "(cols = ⌈√n⌉) without the server learning i."
    ),
    events=(
        Local(_PC, "row r = i div cols, column c = i mod cols"),
        Message(
            _PC,
            _PS,
            "PIRQuery: E(s_j) for each column j, s_j = 1 only at j = c",
            "PIRQuery",
            "cols = ⌈√n⌉ Paillier ciphertexts",
        ),
        Local(_PS, "for every row r: Π_j E(s_j)^(d_rj) = E(d_rc)  (n exponentiations)"),
        Message(_PS, _PC, "one ciphertext per row", "answer", "rows = ⌈n / cols⌉ ciphertexts"),
        Local(_PC, "decrypt the ciphertext of row r: record i"),
    ),
)

_SC, _SS = "client (data, first layers)", "server (remaining layers)"

SPLIT_LEARNING = Protocol(
    key="split_learning",
    title="one training step of split learning",
    parties=(_SC, _SS),
    lesson=14,
    summary="Raw inputs stay with the client; activations, labels and gradients cross the wire.",
    events=(
        Local(_SC, "a = f_client(x)"),
        Message(_SC, _SS, "cut-layer activations a", "client → server: cut-layer activations"),
        Message(_SC, _SS, "labels y", "client → server: labels"),
        Local(_SS, "loss = cross_entropy(f_server(a), y); backpropagate"),
        Message(_SS, _SC, "∂loss/∂a", "server → client: gradient of activations"),
        Local(_SC, "backpropagate ∂loss/∂a through f_client; each side takes an SGD step"),
    ),
)

SPLIT_LEARNING_U = Protocol(
    key="split_learning_u",
    title="one training step of U-shaped split learning",
    parties=(_SC, _SS),
    lesson=14,
    summary=(
        "The client also keeps the last layer (the head h) and the labels: no label crosses the "
        "wire, but the gradients it returns still depend on them."
    ),
    events=(
        Local(_SC, "a = f_client(x)"),
        Message(_SC, _SS, "cut-layer activations a", "client → server: cut-layer activations"),
        Local(_SS, "o = f_server(a)"),
        Message(_SS, _SC, "server-part outputs o", "server → client: server-part outputs"),
        Local(_SC, "loss = cross_entropy(h(o), y); backpropagate to o"),
        Message(_SC, _SS, "∂loss/∂o", "client → server: gradient of server outputs"),
        Local(_SS, "backpropagate ∂loss/∂o through f_server"),
        Message(_SS, _SC, "∂loss/∂a", "server → client: gradient of activations"),
        Local(_SC, "backpropagate ∂loss/∂a through f_client; each side takes an SGD step"),
    ),
)

#: Every chart, by key.
PROTOCOLS: dict[str, Protocol] = {
    p.key: p for p in (SECURE_AGGREGATION, BEAVER, DH_PSI, PIR, SPLIT_LEARNING, SPLIT_LEARNING_U)
}


# -- drawing ------------------------------------------------------------------------------------

_ROW = 0.42  # inches per event
_HEAD = 0.75  # inches for the title and the party boxes
_COLUMN = 3.3  # inches between lifelines
_MARGIN = 1.5  # inches left and right of the outer lifelines
_BLUE, _GREY, _NOTE = "#1f4e79", "#555555", "#f3f0dc"


def _protocol(protocol: Protocol | str) -> Protocol:
    if isinstance(protocol, Protocol):
        return protocol
    if not isinstance(protocol, str):
        raise TypeError(f"expected a Protocol or a key of PROTOCOLS, got {type(protocol).__name__}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"no chart named {protocol!r}; the charts are {sorted(PROTOCOLS)}")
    return PROTOCOLS[protocol]


def draw(protocol: Protocol | str) -> Figure:
    """The message-sequence chart of ``protocol`` (a :class:`Protocol` or a key of
    :data:`PROTOCOLS`) as a new matplotlib figure (not registered with pyplot, so a notebook
    shows it only when asked). Raises ``ValueError`` for an unknown key."""
    p = _protocol(protocol)
    n = len(p.parties)
    width = 2 * _MARGIN + (n - 1) * _COLUMN
    rows = sum(2 if isinstance(e, Message) and e.detail else 1 for e in p.events)
    height = _HEAD + (rows + 1) * _ROW
    fig = Figure(figsize=(width, height), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)  # y grows downwards, in inches
    ax.axis("off")
    x = {party: _MARGIN + k * _COLUMN for k, party in enumerate(p.parties)}
    ax.text(width / 2, 0.22, p.title, ha="center", va="center", fontsize=11, weight="bold")
    top = _HEAD
    for party, px in x.items():
        ax.text(
            px,
            top - 0.2,
            party,
            ha="center",
            va="center",
            fontsize=9.5,
            color="white",
            bbox={"boxstyle": "round,pad=0.35", "facecolor": _BLUE, "edgecolor": _BLUE},
        )
        ax.plot([px, px], [top, height - 0.1], color=_GREY, lw=0.8, ls=(0, (4, 3)), zorder=0)
    renderer = FigureCanvasAgg(fig).get_renderer()  # to measure the notes' text
    y = top - 0.1
    for event in p.events:
        y += _ROW
        if isinstance(event, Phase):
            ax.plot([0.15, width - 0.15], [y - 0.12, y - 0.12], color="#bbbbbb", lw=0.6)
            ax.text(0.2, y, event.text, ha="left", va="center", fontsize=8.5, style="italic")
        elif isinstance(event, Local):
            note = ax.text(
                x[event.party],
                y,
                event.text,
                ha="center",
                va="center",
                fontsize=8.5,
                bbox={"boxstyle": "round,pad=0.3", "facecolor": _NOTE, "edgecolor": "#b8b08a"},
                zorder=3,
            )
            _keep_inside(note, renderer, fig.dpi, width)
        else:
            x0, x1 = x[event.sender], x[event.receiver]
            ax.annotate(
                "",
                xy=(x1, y + 0.08),
                xytext=(x0, y + 0.08),
                arrowprops={"arrowstyle": "-|>", "color": _BLUE, "lw": 1.3},
            )
            ax.text((x0 + x1) / 2, y - 0.02, event.label, ha="center", va="bottom", fontsize=9)
            if event.detail:
                y += _ROW * 0.8
                ax.text(
                    (x0 + x1) / 2,
                    y - 0.05,
                    event.detail,
                    ha="center",
                    va="center",
                    fontsize=8,
                    color=_GREY,
                    style="italic",
                )
    return fig


def _keep_inside(note: Text, renderer: RendererBase, dpi: float, width: float) -> None:
    """Shift a centred note sideways so that its box stays inside the figure."""
    half = note.get_window_extent(renderer).width / dpi / 2 + 0.12  # + the box's padding
    cx, cy = note.get_position()
    note.set_position((min(max(cx, half + 0.05), width - half - 0.05), cy))


def png_bytes(protocol: Protocol | str, *, dpi: int = 110) -> bytes:
    """The chart as PNG bytes (no timestamp or software version inside)."""
    fig = draw(protocol)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None}, facecolor="white")
    return buffer.getvalue()


def chart_output(protocol: Protocol | str) -> dict[str, str]:
    """The chart as a notebook output bundle: the PNG (base64) and, as its plain-text
    alternative, :attr:`Protocol.description` (the course site's alt text for the image)."""
    p = _protocol(protocol)
    return {
        "image/png": base64.b64encode(png_bytes(p)).decode("ascii"),
        "text/plain": p.description,
    }


def show_protocol(protocol: Protocol | str) -> None:
    """Display the chart in a notebook (one output, :func:`chart_output`)."""
    from IPython.display import display

    display(chart_output(protocol), raw=True)
