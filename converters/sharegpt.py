"""Multi-turn dialogues -> canonical `dialogue` rows.

Accepted layouts (each has a test), JSON arrays, JSON Lines or Parquet:
- ShareGPT: `conversations`, a list of {from, value} with from human / user, gpt /
  assistant, or system (an optional first turn);
- OpenAI-style: `messages`, a list of {role, content} with role user, assistant or system.
The turns are kept in `turns` (role and content, system first when there is one);
`question` is the first user turn and `response` the last assistant turn. A dialogue must
alternate user and assistant turns, start with the user (after an optional system turn)
and end with the assistant; a turn out of order (two assistant turns in a row, a system
turn after the first) is `bad_turn_order`, an empty turn `empty_turn`, an unknown speaker
`bad_role`. The record's `id` (or `conversation_id`) is kept; other fields go to meta.
"""

from __future__ import annotations

from typing import Any

from meddata.convert import Converter, Reject, as_record
from meddata.text import clean, detect_lang

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
         "chatgpt": "assistant", "bot": "assistant", "system": "system"}


def turns_of(r: dict[str, Any]) -> list[dict[str, str]]:
    if "conversations" in r:
        raw, role_key, text_key = r["conversations"], "from", "value"
    elif "messages" in r:
        raw, role_key, text_key = r["messages"], "role", "content"
    else:
        raise Reject("missing_field:conversations", "no conversations or messages")
    if not isinstance(raw, list) or not raw:
        raise Reject("wrong_type", "the dialogue is not a non-empty list of turns")
    turns = []
    for k, turn in enumerate(raw, 1):
        if not isinstance(turn, dict):
            raise Reject("wrong_type", f"turn {k} is not an object")
        speaker = clean(turn.get(role_key))
        role = ROLES.get((speaker or "").lower())
        if role is None:
            raise Reject("bad_role", f"turn {k}: speaker {speaker!r}")
        content = turn.get(text_key)
        if not isinstance(content, str) or not content.strip():
            raise Reject("empty_turn", f"turn {k} ({role}) is empty")
        turns.append({"role": role, "content": content.strip()})
    expected = "user"
    for k, turn in enumerate(turns, 1):
        if turn["role"] == "system" and k == 1:
            continue
        if turn["role"] != expected:
            raise Reject("bad_turn_order", f"turn {k} is {turn['role']}, expected {expected}")
        expected = "assistant" if expected == "user" else "user"
    if turns[-1]["role"] != "assistant":
        raise Reject("bad_turn_order", "the dialogue does not end with an assistant turn")
    return turns


class ShareGPT(Converter):
    source = "sharegpt"
    # a layout, not one release: ShareGPT exports state no licence (--license sets the terms
    # of what you convert)
    license = "unknown"
    default_subset = "default"
    #: fields a record of this source has (all of one group)
    signatures = (("conversations",), ("messages",))

    def row(self, rec):
        r = as_record(rec)
        turns = turns_of(r)
        users = [t["content"] for t in turns if t["role"] == "user"]
        answer = turns[-1]["content"]
        return {"source_id": clean(r.get("id")) or clean(r.get("conversation_id")),
                "task": "dialogue", "lang": detect_lang(*users, answer),
                "question": users[0], "response": answer, "turns": turns,
                "meta": {k: v for k, v in r.items()
                         if k not in ("id", "conversation_id", "conversations", "messages")}}
