"""Pieces every event family shares: ids, the sixteen documented properties, message builders.

Everything here is a pure function of a typed outcome and a ``MappingContext``.
Values stay ``Decimal``; ``bridge.domain.wire`` turns them into exact JSON at the end.
"""

from __future__ import annotations

import decimal
import hashlib
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import cached_property
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from bridge.domain.models import (
    ChangedPointInfo,
    GuestFieldsMixin,
    NoRewardsAppliedReply,
    Outcome,
    PointInfo,
    RewardPointInfo,
    SuccessReply,
    WalletContentsMixin,
)
from bridge.domain.version import __version__

Message = dict[str, Any]
T = TypeVar("T")
Properties = dict[str, Any]

# The nine events of the Paytronix source page, by their documented names.
POS_ACTIVITY = "POS Activity"
ADD_REDEEM = "Add/Redeem"
IDENTIFY_CUSTOMER = "Identify Customer"
LOYALTY_REGISTRATION = "Loyalty Registration"
WEB_REGISTRATION = "Web Registration"
REFERRAL = "Referral"
CHECK_IN = "Check-In"
RECHARGE_VALUE = "Recharge Value"
SURVEY_COMPLETION = "Survey Completion"
EVENT_NAMES = (
    POS_ACTIVITY,
    ADD_REDEEM,
    IDENTIFY_CUSTOMER,
    LOYALTY_REGISTRATION,
    WEB_REGISTRATION,
    REFERRAL,
    CHECK_IN,
    RECHARGE_VALUE,
    SURVEY_COMPLETION,
)
#: Decimal context for sums: wide enough that adding decimals the models accept never rounds.
EXACT = decimal.Context(prec=200, Emax=999, Emin=-999)

# Name under which configuration may disable the identify calls.
IDENTIFY = "identify"

INTEGRATION = {"name": "loyalty-segment-bridge", "version": __version__}

# Fixed namespace of the bridge's messageIds (a UUIDv5 of the project's URL).
MESSAGE_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/loyalty-segment-bridge/bridge")


@dataclass(frozen=True)
class Store:
    """One row of a merchant's store directory."""

    code: str
    name: str | None = None
    latitude: Decimal | None = None
    longitude: Decimal | None = None
    city: str | None = None
    postal_code: str | None = None
    state: str | None = None
    country: str | None = None


@dataclass(frozen=True)
class MappingContext:
    """What a merchant's configuration adds to mapping: store directory, renames, disabled events."""

    stores: Mapping[str, Store] = field(default_factory=dict)
    rename: Mapping[str, str] = field(default_factory=dict)
    disabled: frozenset[str] = frozenset()

    @cached_property
    def store_properties(self) -> dict[str, Properties]:
        """The store properties of each store code of the directory, worked out once."""
        return {code: _store_row(code, store) for code, store in self.stores.items()}


DEFAULT_CONTEXT = MappingContext()


class once(Generic[T]):
    """``functools.cached_property`` without its lock (Python 3.11 takes one on every first
    read, which costs more than most of what is cached here): a method's value, worked out on
    first read and then kept in the instance. For objects of one thread (one mapping call)."""

    def __init__(self, method: Callable[[Any], T]) -> None:
        self.method = method
        self.name = method.__name__

    def __get__(self, instance: Any, owner: Any = None) -> T:
        value = instance.__dict__[self.name] = self.method(instance)
        return value


# --------------------------------------------------------------------------- ids


_NAMESPACE_BYTES = MESSAGE_ID_NAMESPACE.bytes
# RFC 4122 variant: the top two bits of byte 8 become 10.
_VARIANT = {f"{n:x}": f"{(n & 0x3) | 0x8:x}" for n in range(16)}


def message_id(merchant_id: int, outcome_id: str, slot: str) -> str:
    """Deterministic messageId: UUIDv5 of merchant, outcome id and the message's place (slot).

    The slot names the message by what it is (``track:POS Activity``, ``track:Add/Redeem:1``,
    ``identify``), not by its index, so disabling an event never shifts another's id."""
    # uuid.uuid5, inlined: sha1(namespace + name), version 5 and RFC 4122 variant bits set.
    digest = hashlib.sha1(  # noqa: S324 - UUIDv5 is defined on SHA-1
        _NAMESPACE_BYTES + f"{merchant_id}\x1f{outcome_id}\x1f{slot}".encode()
    ).digest()
    h = digest[:16].hex()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


def anonymous_id(merchant_id: int, basis: str, value: str) -> str:
    """A stable anonymousId from the merchant and a card (or token); never the raw value."""
    digest = hashlib.sha256(f"{merchant_id}\x1f{basis}\x1f{value}".encode()).hexdigest()
    return f"anon-{digest[:32]}"


# --------------------------------------------------------------------------- guest facts


class GuestFacts(Protocol):
    """What a reply (or one card of a split check) may say of the guest."""

    @property
    def customer_name(self) -> str | None: ...
    @property
    def tier_name(self) -> str | None: ...
    @property
    def printed_card_number(self) -> str | None: ...
    @property
    def account_code(self) -> str | None: ...
    @property
    def anonymous_account_token(self) -> str | None: ...
    @property
    def px_transaction_id(self) -> int | None: ...


def reply_guest_fields(outcome: Outcome) -> list[GuestFacts]:
    """The reply objects that may name the guest, most specific first."""
    response = outcome.response
    found: list[GuestFacts] = []
    if isinstance(response, SuccessReply):
        found.append(response)
        if isinstance(response.reply, GuestFieldsMixin):
            found.append(response.reply)
    return found


def known(value: str | None) -> str | None:
    """The value, or None when it says nothing: a blank string is unknown, never ``""``."""
    return value if value is not None and value.strip() else None


def _first(values: Iterable[str | None]) -> str | None:
    """The first value that says something (blank strings say nothing)."""
    for value in values:
        if value is not None and value.strip():
            return value
    return None


def split_name(full_name: str | None) -> tuple[str | None, str | None]:
    """``"John Doe"`` -> ``("John", "Doe")``; one word is a first name only."""
    if not full_name or not full_name.strip():
        return None, None
    first, _, last = full_name.strip().partition(" ")
    return first, (last.strip() or None)


@dataclass(frozen=True)
class Person:
    """Who a message is about, worked out once per message: its Segment ids (``userId``, else an
    ``anonymousId``) and the guest's properties (names, card, opt-ins, tier, account code)."""

    ids: dict[str, str]
    properties: Properties


#: The guest fields ``person`` reads, for an outcome without a guest.
_NO_GUEST: dict[str, Any] = dict.fromkeys(
    ("user_id", "account_code", "printed_card_number", "first_name", "last_name", "tier_name")
) | {"email_opt_in": None, "text_opt_in": None}


def _first_of(value: str | None, replies: list[GuestFacts], name: str) -> str | None:
    """``value`` if it says something, else the first reply's field ``name`` that does (``_first``
    over both, without building the chain: it runs several times per message)."""
    if value is not None and value.strip():
        return value
    for reply in replies:
        found: str | None = getattr(reply, name)
        if found is not None and found.strip():
            return found
    return None


def _card_number(outcome: Outcome, guest: dict[str, Any], replies: list[GuestFacts]) -> str | None:
    """The printed card number: the guest's, else the replies', else a noRewardsApplied reply's,
    else ``request.cardInfo``'s."""
    card = _first_of(guest["printed_card_number"], replies, "printed_card_number")
    if card is not None:
        return card
    response = outcome.response
    request = outcome.request
    return _first(
        [
            response.printed_card_number if isinstance(response, NoRewardsAppliedReply) else None,
            request.card_info.printed_card_number if request and request.card_info else None,
        ]
    )


def person(outcome: Outcome, card_reply: GuestFacts | None = None, card_index: int | None = None) -> Person:
    """The person of ``outcome`` (of one card of a split check when ``card_reply`` is given, the
    card at ``card_index`` of the reply).

    ``userId`` = guest.userId, else the account code; otherwise a stable anonymousId of the
    card, the reply's token, or the outcome (of the outcome's card ``card_index``: two cards
    nothing names are two people, not one). Names come from ``guest`` as a pair; when it gives
    neither (blank is not a name), from the reply's ``customerName``. The printed card number
    is the guest's, else the reply's, else ``request.cardInfo``'s."""
    guest = outcome.guest
    g = guest.__dict__ if guest is not None else _NO_GUEST  # the fields (see mappings.pos._item)
    replies = reply_guest_fields(outcome)
    if card_reply is not None:
        replies.insert(0, card_reply)
    account = _first_of(g["account_code"], replies, "account_code")
    card = _card_number(outcome, g, replies)
    user_id = _first((g["user_id"], account))
    if user_id is not None:
        ids = {"userId": user_id}
    elif card is not None:
        ids = {"anonymousId": anonymous_id(outcome.merchant_id, "card", card)}
    elif (token := _first_of(None, replies, "anonymous_account_token")) is not None:
        ids = {"anonymousId": anonymous_id(outcome.merchant_id, "token", token)}
    elif card_index is None:  # nothing names the guest (a check without a card): the outcome is
        ids = {"anonymousId": anonymous_id(outcome.merchant_id, "outcome", outcome.outcome_id)}
    else:  # nor the card of a split check: that card of the outcome
        subject = f"{outcome.outcome_id}\x1f{card_index}"
        ids = {"anonymousId": anonymous_id(outcome.merchant_id, "outcome-card", subject)}
    first = known(g["first_name"])
    last = known(g["last_name"])
    if first is None and last is None:
        first, last = split_name(_first_of(None, replies, "customer_name"))
    props: Properties = {
        "first_name": first,
        "last_name": last,
        "printed_card_number": card,
        "email_opt_in": g["email_opt_in"],
        "text_opt_in": g["text_opt_in"],
        "tier_name": _first_of(g["tier_name"], replies, "tier_name"),
        # Sent beside a userId, so that the ids of one person can be linked.
        "account_code": account,
    }
    # Only the known ones (the strings above are never blank): merged into messages as they are.
    return Person(ids, drop_none(props))


def store_properties(outcome: Outcome, ctx: MappingContext) -> Properties:
    """store_code from the outcome; the rest from the merchant's store directory (known values
    only, worked out once per store: ``MappingContext.store_properties``). Not to be modified."""
    code = outcome.effective_store_code
    if code is None:
        return {}
    props = ctx.store_properties.get(code)
    return props if props is not None else {"store_code": code}


def _store_row(code: str, store: Store) -> Properties:
    """The known properties of one store of the directory, ``store_code`` first."""
    return drop_unknown(
        {
            "store_code": code,
            "store_name": store.name,
            "store_latitude": store.latitude,
            "store_longitude": store.longitude,
            "store_city": store.city,
            "store_postal_code": store.postal_code,
            "store_state": store.state,
            "store_country": store.country,
        }
    )


# --------------------------------------------------------------------------- wallets


class _Wallet:
    """One wallet as the lists name it, gathered by code (``_wallets_by_code``)."""

    __slots__ = ("balance", "code", "extra", "kind", "label", "quantity_changed")

    def __init__(self, code: int | None) -> None:
        self.code = code  # None only for a stored-value wallet given without its code
        self.label: str | None = None
        self.kind: str | None = None
        self.balance: Decimal | None = None
        self.quantity_changed: Decimal | None = None
        self.extra: dict[str, Any] | None = None


class Wallets(NamedTuple):
    """The wallet lists an outcome gives (the same names as ``WalletContentsMixin``)."""

    point_balances: list[PointInfo]
    reward_balances: list[RewardPointInfo]
    changed_wallet_contents: list[ChangedPointInfo]


def wallet_lists(*sources: WalletContentsMixin | None) -> Wallets:
    """The first non-empty list of each kind among the sources (top-level reply before nested)."""
    points: list[PointInfo] = []
    rewards: list[RewardPointInfo] = []
    changed: list[ChangedPointInfo] = []
    for src in sources:
        if src is None:
            continue
        points = points or src.point_balances
        rewards = rewards or src.reward_balances
        changed = changed or src.changed_wallet_contents
    return Wallets(points, rewards, changed)


def _wallet_sources(outcome: Outcome) -> list[WalletContentsMixin]:
    """Where an outcome that is not a Check Service call may carry wallet lists, in order: its
    ``data``, then its reply (top-level, then nested). Any kind may carry them "in `response` or
    `data`" (DESIGN)."""
    response = outcome.response
    sources: list[WalletContentsMixin | None] = [outcome.data]
    if isinstance(response, SuccessReply | NoRewardsAppliedReply):
        sources.append(response)
        nested = getattr(response, "reply", None)
        if isinstance(nested, WalletContentsMixin):
            sources.append(nested)
    return [source for source in sources if source is not None]


def outcome_wallets(outcome: Outcome) -> Wallets:
    """The wallet lists of an outcome that is not a Check Service call: of each kind, the first
    of ``_wallet_sources`` that has one. A reply that applied nothing (``noRewardsApplied``) has
    its balances read, but no change is reported at all, as for a check."""
    found = wallet_lists(*_wallet_sources(outcome))
    if isinstance(outcome.response, NoRewardsAppliedReply):
        return found._replace(changed_wallet_contents=[])
    return found


def outcome_transaction_id(outcome: Outcome) -> int | None:
    """The transaction id of an outcome that is not a Check Service call: that of the source
    whose wallet changes are reported (``outcome_wallets``), else the first source's that has one."""
    sources = _wallet_sources(outcome)
    sources.sort(key=lambda source: not source.changed_wallet_contents)  # stable: the changes' first
    for source in sources:
        found: int | None = getattr(source, "px_transaction_id", None)
        if found is not None:
            return found
    return None


def wallet_properties(
    wallets: Wallets | WalletContentsMixin,
    stored_value: tuple[int | None, str | None, Decimal | None] | None = None,
    *,
    with_changes: bool = True,
) -> Properties:
    """wallets_info, all_wallets_info and flat_wallets_info from the wallet lists an outcome gives.

    ``stored_value`` is (wallet code, label, balance) of a stored-value wallet (Recharge Value).
    ``with_changes=False`` leaves the changes out (a simulation changed nothing)."""
    by_code = _wallets_by_code(wallets, stored_value, with_changes)
    return _wallet_infos(by_code.values()) if by_code else {}


def _wallet_entry(
    by_code: dict[int | None, _Wallet], code: int | None, label: str | None, kind: str | None
) -> _Wallet:
    """The wallet of ``code`` (added when new), given the label (a blank one is none) and kind it
    lacks so far."""
    entry = by_code.get(code)
    if entry is None:
        entry = by_code[code] = _Wallet(code)
    if known(entry.label) is None:  # a blank label says nothing: another list may name it
        entry.label = label
    entry.kind = entry.kind or kind
    return entry


def _wallets_by_code(
    wallets: Wallets | WalletContentsMixin,
    stored_value: tuple[int | None, str | None, Decimal | None] | None,
    with_changes: bool,
) -> dict[int | None, _Wallet]:
    """Every wallet the lists name, by code, in order of first mention: balances, reward details,
    the sum of its changes (when ``with_changes``), then the stored-value wallet (under None when
    the outcome gives its label or balance but not its code)."""
    by_code: dict[int | None, _Wallet] = {}
    for point in wallets.point_balances:
        _wallet_entry(by_code, point.wallet_code, point.point_name, "points").balance = point.balance
    for reward in wallets.reward_balances:
        entry = _wallet_entry(by_code, reward.wallet_code, reward.point_name, "reward")
        entry.balance = reward.balance
        entry.extra = _reward_details(reward)
    for change in wallets.changed_wallet_contents if with_changes else ():
        entry = _wallet_entry(by_code, change.wallet_code, change.point_name, None)
        # EXACT.add: the same exact addition as under localcontext(EXACT), without switching contexts
        entry.quantity_changed = EXACT.add(entry.quantity_changed or Decimal(0), change.quantity)
    if stored_value is not None:
        code, label, balance = stored_value
        # Without its code, the wallet is the recharge's own only if no listed wallet has its
        # label (a list that names it already says it, by code).
        listed = code is None and any(known(w.label) == known(label) for w in by_code.values())
        if (code is not None or known(label) is not None or balance is not None) and not listed:
            entry = _wallet_entry(by_code, code, label, "stored_value")
            entry.kind = "stored_value"
            if balance is not None:
                entry.balance = balance
    return by_code


def _reward_details(reward: RewardPointInfo) -> dict[str, Any]:
    """What a reward wallet tells beyond its balance (in all_wallets_info)."""
    return drop_unknown(
        {
            "discount_object_number": reward.discount_object_number,
            "expirations": [
                drop_unknown({"quantity": e.quantity, "date": e.date}) for e in reward.expiration_dates
            ],
            "additional_expiring_balance": reward.additional_expiring_balance,
            "reward_type": reward.reward_type,
            "reward_value_type": reward.reward_value_type,
        }
    )


def _wallet_infos(entries: Iterable[_Wallet]) -> Properties:
    """The three wallet properties: balances by label, every wallet in full, and flat by code
    (known values only: a blank label is none)."""
    wallets_info: dict[str, Decimal] = {}
    all_info: list[dict[str, Any]] = []
    flat: dict[str, Any] = {}
    for entry in entries:
        code = entry.code
        if code is None:  # a stored-value wallet without its code: not in the by-code one
            all_info.append(_codeless_wallet(entry, wallets_info))
            continue
        label = known(entry.label)
        balance = entry.balance
        info: dict[str, Any] = {"wallet_code": code}
        if label is not None:
            info["wallet_label"] = flat[f"wallet_{code}_label"] = label
            if balance is not None:  # by code in the other two
                wallets_info[label if label not in wallets_info else f"{label} ({code})"] = balance
        if balance is not None:
            info["balance"] = flat[f"wallet_{code}_balance"] = balance
        if entry.kind is not None:
            info["kind"] = entry.kind
        if entry.quantity_changed is not None:
            info["quantity_changed"] = flat[f"wallet_{code}_quantity_changed"] = entry.quantity_changed
        if entry.extra:
            info.update(entry.extra)
        all_info.append(info)
    # Each only when it holds something: {} says nothing (no wallet with a label and a balance).
    found = {"wallets_info": wallets_info, "all_wallets_info": all_info, "flat_wallets_info": flat}
    return {name: value for name, value in found.items() if value}


def _codeless_wallet(entry: _Wallet, wallets_info: dict[str, Decimal]) -> dict[str, Any]:
    """A stored-value wallet given without its code (a recharge naming only the wallet's label):
    its label and balance in ``wallets_info`` and ``all_wallets_info``, never under a code."""
    label = known(entry.label)
    info: dict[str, Any] = {"wallet_label": label} if label is not None else {}
    if entry.balance is not None:
        info["balance"] = entry.balance
        if label is not None and label not in wallets_info:
            wallets_info[label] = entry.balance
    info["kind"] = "stored_value"
    return info


def points_changed(changes: list[ChangedPointInfo], *, decreases_redeem: bool = True) -> Properties:
    """points_earned (sum of increases) and points_redeemed (sum of decreases, positive), only
    when the outcome reports changes and all of them are of one wallet: with no changes reported
    the totals are unknown (never a guessed 0), and a sum across wallets would add different
    units (points and reward dollars). Each total only when a change of its sign is listed.
    ``changed_wallets`` carries the changes per wallet.

    ``decreases_redeem=False``: a decrease this outcome reports may be points taken back (a
    return check, a check call that does not redeem: ``mappings.pos.decreases_redeem``) rather
    than spent, so with a decrease neither total is known."""
    if not changes or len({change.wallet_code for change in changes}) != 1:
        return {}
    if not decreases_redeem and any(change.quantity < 0 for change in changes):
        return {}
    earned: Decimal | None = None
    redeemed: Decimal | None = None
    for change in changes:
        if change.quantity >= 0:
            earned = EXACT.add(earned or Decimal(0), change.quantity)
        else:
            redeemed = EXACT.subtract(redeemed or Decimal(0), change.quantity)
    # Each only from a change that says it: the list holds the visible changes only, so no
    # increase listed is not "0 earned" (and no decrease is not "0 redeemed").
    totals: Properties = {}
    if earned is not None:
        totals["points_earned"] = earned
    if redeemed is not None:
        totals["points_redeemed"] = redeemed
    return totals


def changed_wallets(changes: list[ChangedPointInfo]) -> list[dict[str, Any]]:
    """Each change the outcome reports (changedWalletContents): wallet code, label, quantity."""
    return [
        {"wallet_code": c.wallet_code, "wallet_label": c.point_name, "quantity": c.quantity}
        if known(c.point_name) is not None
        else {"wallet_code": c.wallet_code, "quantity": c.quantity}
        for c in changes
    ]


# --------------------------------------------------------------------------- messages


def drop_unknown(props: Mapping[str, Any]) -> dict[str, Any]:
    """Unknown values are omitted, never sent as a guess: None, blank strings (a blank says
    nothing, and ``""`` is not a value), and empty lists of optional facts."""
    return {
        k: v
        for k, v in props.items()
        if v is not None and (v.__class__ is not list or v) and (v.__class__ is not str or v.strip())
    }


def drop_none(props: Mapping[str, Any]) -> dict[str, Any]:
    """``drop_unknown`` for values that can be neither a string nor a list (or are known not blank)."""
    return {k: v for k, v in props.items() if v is not None}


def base_properties(outcome: Outcome, ctx: MappingContext, who: Person) -> Properties:
    """The documented properties every event carries when it has data for them, plus merchant_id."""
    return {"merchant_id": outcome.merchant_id, **who.properties, **store_properties(outcome, ctx)}


def utc_text(moment: datetime) -> str:
    """A UTC date-time as ISO-8601 text with ``Z`` (models keep every time in UTC)."""
    return moment.isoformat().replace("+00:00", "Z")


#: Every message's ``context``: one object, shared by all messages (not to be modified).
_CONTEXT: dict[str, Any] = {"integration": INTEGRATION}
#: The last ``occurredAt`` written as a timestamp, and its text: an outcome's messages share it.
#: One tuple, replaced whole, so that threads mapping at once never pair one's time with another's text.
_LAST_TIMESTAMP: list[tuple[datetime | None, str]] = [(None, "")]


def timestamp_text(moment: datetime) -> str:
    """``timestamp`` of a message: the UTC moment in milliseconds, with ``Z``."""
    last = _LAST_TIMESTAMP[0]
    if last[0] is moment:
        return last[1]
    text = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    _LAST_TIMESTAMP[0] = (moment, text)
    return text


def _envelope(outcome: Outcome, slot: str, ids: dict[str, str]) -> Message:
    return {
        **ids,
        "timestamp": timestamp_text(outcome.occurred_at),
        "messageId": message_id(outcome.merchant_id, outcome.outcome_id, slot),
        "context": _CONTEXT,
    }


def track(
    outcome: Outcome,
    ctx: MappingContext,
    event: str,
    properties: Properties,
    who: Person,
    *,
    slot_suffix: str = "",
) -> list[Message]:
    """A track call about ``who``, renamed per configuration; [] when the merchant disabled the event.

    ``properties`` holds known values only (the builders leave unknown ones out: ``drop_unknown``)."""
    if event in ctx.disabled:
        return []
    slot = f"track:{event}{slot_suffix}"
    message = _envelope(outcome, slot, who.ids)
    message["type"] = "track"
    message["event"] = ctx.rename.get(event, event)
    message["properties"] = properties
    return [message]


def identify(outcome: Outcome, ctx: MappingContext, who: Person) -> list[Message]:
    """An identify call with the guest's traits; [] when the merchant disabled ``identify``."""
    if IDENTIFY in ctx.disabled:
        return []
    guest = outcome.guest
    person = dict(who.properties)
    # The person's traits only (no store), each once: Segment's reserved traits in their own
    # spelling (firstName, lastName, email, phone), the source's properties in theirs.
    traits: Properties = {
        "merchant_id": outcome.merchant_id,
        "firstName": person.pop("first_name", None),
        "lastName": person.pop("last_name", None),
        "email": known(guest.email) if guest else None,
        "phone": known(guest.phone) if guest else None,
        **person,
    }
    message = _envelope(outcome, IDENTIFY, who.ids)
    message["type"] = "identify"
    message["traits"] = drop_unknown(traits)
    return [message]
