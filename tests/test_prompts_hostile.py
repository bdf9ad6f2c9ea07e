"""Rendering under hostile content: property-based (hypothesis) and the bounds of prompt sets."""
import re

import jinja2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zyn.errors import InputError, PromptError
from zyn.prompts import MAX_DEPTH, from_dict

TEMPLATE = ("Q: {{ question }}\nPrompt: {{ prompt }}\n{% for m in messages %}[{{ m.role }}] {{ m.content }}\n"
            "{% endfor %}Answer: {{ completion }}\nText again: {{ text }}\nIs it good?")
PS = from_dict({"name": "hostile", "fields": ["question"], "questions": [{"name": "q", "template": TEMPLATE}]},
               "hostile.yaml")
PLAIN = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True).from_string(TEMPLATE)

# Valid Unicode (no lone surrogates), biased towards the renderer's own marker characters.
MARKERS = st.sampled_from(["\ue000", "\ue001", "\ue0000\ue001", "\ue000a:1\ue001", ":", "0", "{{ text }}", "{%"])
CHARS = st.characters(blacklist_categories=("Cs",))
TEXT = st.lists(st.one_of(MARKERS, st.text(CHARS, max_size=8)), max_size=6).map("".join)


def _context(record: dict) -> dict:
    """What the templates see for a prompt/completion record (see prompts.make_context)."""
    messages = [{"role": "user", "content": record["prompt"]}] if record["prompt"] else []
    messages.append({"role": "assistant", "content": record["completion"]})
    return {**record, "text": record["prompt"] + record["completion"], "messages": messages}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prompt=TEXT, completion=TEXT, question=TEXT)
def test_no_content_changes_what_is_substituted(prompt, completion, question):
    record = {"prompt": prompt, "completion": completion, "question": question}
    (query,) = PS.render(record)
    # the model reads exactly the plain rendering of the record...
    assert query.user == PLAIN.render(_context(record))
    # ...and what may be cut is only ever one of the record's own values, in template order
    cut = [piece for piece, cuttable in query.segments if cuttable]
    expected = [v for v in (question, prompt, completion, prompt + completion) if v]
    assert cut in (expected, [])  # [] only when the split could not be checked and nothing is cut


@settings(max_examples=100, deadline=None)
@given(messages=st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system"]),
                                                "content": TEXT}), min_size=1, max_size=4), question=TEXT)
def test_chat_records_render_their_messages_verbatim(messages, question):
    (query,) = PS.render({"messages": messages, "question": question})
    for m in messages:
        assert m["content"] in query.user


@settings(max_examples=100, deadline=None)
@given(head=st.text(CHARS, max_size=5), tail=st.text(CHARS, max_size=5),
       surrogate=st.integers(0xD800, 0xDFFF).map(chr), where=st.sampled_from(["completion", "question", "msg"]))
def test_lone_surrogates_are_refused_naming_the_field(head, tail, surrogate, where):
    bad = head + surrogate + tail
    record = {"prompt": "p", "completion": "c", "question": "q"}
    if where == "msg":
        record = {"messages": [{"role": "user", "content": bad}], "question": "q"}
    else:
        record[where] = bad
    with pytest.raises(InputError, match="lone surrogate") as e:
        PS.render(record, index=7)
    assert "item 7" in str(e.value) and ("messages" if where == "msg" else where) in str(e.value)


def test_deep_and_cyclic_records_are_refused():
    deep: list = ["x"]
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(InputError, match="nested deeper"):
        PS.render({"completion": "c", "question": "q", "extra": deep})
    cyclic: dict = {"completion": "c", "question": "q"}
    cyclic["self"] = cyclic
    with pytest.raises(InputError, match="nested deeper"):
        PS.render(cyclic)


def test_records_of_too_many_values_are_refused_before_any_walk_over_them():
    """A few MB of small values in a field no template reads would make every later walk
    (rendering, the server's size checks) slow: refused by count, naming the field."""
    from zyn.prompts import MAX_VALUES

    record = {"completion": "c", "question": "q", "unused": [[] for _ in range(10 * MAX_VALUES)]}
    with pytest.raises(InputError, match=f"field 'unused': the record holds more than {MAX_VALUES} values"):
        PS.render(record, index=3)
    chat = {"messages": [{"role": "user", "content": "hi"}] * 1000, "question": "q"}  # 5,001 values: fine
    assert PS.render(chat)


@pytest.mark.parametrize("expr", ["'x' * 10**8", "['x'] * 10**8", "'x'.ljust(10**8)", "'x'|center(10**8)",
                                  "'x'|indent(10**8)", "2 ** 10000", "'ab' * 99999 + 'ab' * 99999"])
def test_templates_cannot_build_huge_values(expr):
    with pytest.raises(PromptError, match="template"):
        from_dict({"name": "big", "questions": [{"template": "{{ text }}{{ " + expr + " }}"}]}, "big.yaml")


def test_yaml_alias_bombs_and_oversized_files_are_refused(tmp_path):
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 9):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    lines += ["name: *l8", "questions: [{template: '{{ text }}'}]"]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines))
    with pytest.raises(PromptError, match="bomb.yaml: expands to more than"):
        from zyn.prompts import load_prompt_set
        load_prompt_set(str(bomb))


@pytest.mark.parametrize("data, field", [
    ({"system": {"role": "x"}}, "system"),
    ({"name": ["a"]}, "name"),
    ({"reward": 3}, "reward"),
    ({"questions": [{"template": ["{{ text }}"]}]}, "questions[0].template"),
    ({"questions": [{"template": "{{ text }}", "weight": True}]}, "questions[0].weight"),
    ({"questions": [{"template": "{{ text }}", "calibration": {"scale": "1"}}]}, "questions[0].calibration.scale"),
])
def test_field_types_are_checked_at_load_time(data, field):
    spec = {"name": "t", "questions": [{"template": "{{ text }}"}], **data}
    with pytest.raises(PromptError, match=re.escape(f"t.yaml: {field}: expected")):
        from_dict(spec, "t.yaml")
