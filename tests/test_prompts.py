"""Prompt sets: loading, validation errors that name file and field, rendering."""
import pickle
from pathlib import Path

import pytest

from zyn.errors import InputError, PromptError
from zyn.prompts import Penalty, PromptSet, Question, available_prompt_sets, load_prompt_set

SHIPPED = ["sentiment", "d5_funny_scifi", "sentiment_robust", "detox", "answer_grader", "sentiment_norepeat"]


def write(tmp_path, text, name="p.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_sets_load_by_name_and_path():
    assert set(SHIPPED) <= set(available_prompt_sets())
    for name in SHIPPED:
        ps = load_prompt_set(name)
        assert ps.questions and ps.name == name
    robust = load_prompt_set("sentiment_robust")
    assert [q.reward_answer for q in robust.questions] == ["yes", "no", "no", "yes", "no"]
    assert robust.version == "5" and robust.penalties == (Penalty("repeated_ngrams", 10.0, 3),)
    plain, norepeat = load_prompt_set("sentiment"), load_prompt_set("sentiment_norepeat")  # the RL reward: sentiment + penalty
    assert norepeat.questions == plain.questions and norepeat.system == plain.system and not plain.penalties
    assert norepeat.penalties == robust.penalties
    detox = load_prompt_set("detox")  # v4 (issue 17, round 6): v3's min of polite (yes) and a role-play guard (no)
    assert detox.version == "4" and detox.combine == "min" and not detox.delimit
    assert detox.penalties == (Penalty("repeated_ngrams", 10.0, 3),)
    assert [(q.name, q.reward_answer) for q in detox.questions] == [("polite", "yes"), ("roles", "no")]
    v2 = load_prompt_set(Path(__file__).parents[1] / "benchmarks/data/prompts_v1/detox_v2.yaml")  # frozen, for the round 1-4 figures
    assert v2.version == "2" and v2.delimit and [q.reward_answer for q in v2.questions] == ["no"]
    frozen = Path(__file__).parents[1] / "benchmarks/data/prompts_v1"
    for name, version in [("detox_v3", "3"), ("sentiment_robust_v4", "4")]:  # the round 6 figures' "before"
        old = load_prompt_set(frozen / f"{name}.yaml")
        assert old.name == name and old.version == version and not old.penalties


def test_yes_no_words_stay_strings(tmp_path):
    # YAML 1.1 reads bare yes/no as booleans; zyn must not
    path = write(tmp_path, "name: t\nanswers: {yes: [Yes, True], no: [No]}\nquestions:\n"
                           "  - {name: q, template: '{{ text }} ok?', reward_answer: no}\n")
    ps = load_prompt_set(path)
    assert ps.answers == (("Yes", "True"), ("No",)) and ps.questions[0].reward_answer == "no"


def test_bare_question():
    ps = load_prompt_set("Is this text about cats?")
    assert ps.name == "is_this_text_about_cats"  # two questions side by side are told apart by name
    (q,) = ps.render("I love my cat.")
    assert q.user == "I love my cat.\n\nIs this text about cats?"
    (q,) = load_prompt_set("Is {{ text }} polite?").render("you idiot")  # a question that places the text
    assert q.user == "Is you idiot polite?"
    with pytest.raises(PromptError, match=r"undefined variable\(s\) \['txt'\]"):
        load_prompt_set("Is {{ txt }} polite?")


@pytest.mark.parametrize("body, match", [
    ("name: t\ncolour: red\nquestions: [{template: '{{ text }}'}]\n", r"unknown key\(s\) \['colour'\]"),
    ("name: t\nquestions: [{template: 'Is it good?'}]\n", r"questions\[0\]\.template: uses no input variable"),
    ("name: t\nquestions: [{template: '{{ txet }}?'}]\n", r"questions\[0\]\.template: undefined variable.*txet"),
    ("name: t\nquestions: []\n", "questions: a non-empty list"),
    ("name: t\nquestions: [{template: '{{ text }}', weight: 0}]\n", r"questions\[0\]\.weight: must be a positive"),
    ("name: t\nquestions: [{template: '{{ text }}', wieght: 1}]\n", r"questions\[0\]: unknown key\(s\) \['wieght'\]"),
    ("name: t\nreward: big\nquestions: [{template: '{{ text }}'}]\n", "reward: 'big' is not one of"),
    ("name: t\nquestions: [{template: '{{ text }'}]\n", "Jinja syntax error"),
    ("name: t\nquestions: [{template: '{{ text }}', reward_answer: maybe}]\n", "reward_answer: 'maybe'"),
    ("name: t\ncombine: min\nquestions: [{name: a, template: '{{ text }}?'}, {name: b, template: '{{ text }}!', weight: 2}]\n",
     r"questions\[1\]\.weight: combine: min .* reads no weights"),
    ("name: t\npenalties: {kind: repeated_ngrams}\nquestions: [{template: '{{ text }}'}]\n", "penalties: expected a list"),
    ("name: t\npenalties: [{kind: length, weight: 1}]\nquestions: [{template: '{{ text }}'}]\n",
     r"penalties\[0\]: kind: 'length' is not one of repeated_ngrams"),
    ("name: t\npenalties: [{n: 2}]\nquestions: [{template: '{{ text }}'}]\n", r"penalties\[0\]\.weight: required"),
    ("name: t\nquestions: [{template: '{{ text }}', weight: .inf}]\n", r"questions\[0\]\.weight: must be a positive number up to"),
    ("name: t\nquestions: [{template: '{{ text }}', weight: .nan}]\n", r"questions\[0\]\.weight: must be a positive"),
    ("name: t\nquestions: [{template: '{{ text }}', weight: 1.0e+308}]\n", r"questions\[0\]\.weight: must be a positive"),
    ("name: t\nquestions: [{template: '{{ text }}', calibration: {scale: 1, shift: .nan}}]\n",
     r"questions\[0\]\.calibration: needs a finite positive scale and a finite shift, got scale 1, shift nan"),
    ("name: t\nquestions: [{template: '{{ text }}', calibration: {scale: .inf}}]\n", r"questions\[0\]\.calibration: needs a finite"),
    ("name: t\nquestions: [{template: '{{ text }}', calibration: {shift: -.inf}}]\n", r"questions\[0\]\.calibration: needs a finite"),
    ("name: t\nanswers: {yes: [Yes], no: [' yes', 'No']}\nquestions: [{template: '{{ text }}'}]\n",
     r"answers: \['yes'\] is both a yes and a no answer"),
    ("name: t\npenalties: [{weight: 0}]\nquestions: [{template: '{{ text }}'}]\n", r"penalties\[0\]\.weight: must be a positive"),
    ("name: t\npenalties: [{weight: -2}]\nquestions: [{template: '{{ text }}'}]\n", r"penalties\[0\]\.weight: must be a positive"),
    ("name: t\npenalties: [{weight: .inf}]\nquestions: [{template: '{{ text }}'}]\n", r"penalties\[0\]\.weight: must be a positive"),
    ("name: t\npenalties: [{weight: true}]\nquestions: [{template: '{{ text }}'}]\n", r"penalties\[0\]\.weight: expected int or float"),
    ("name: t\npenalties: [{weight: 1, n: 0}]\nquestions: [{template: '{{ text }}'}]\n", r"penalties\[0\]\.n: must be a whole number from 1 to 16"),
    ("name: t\npenalties: [{weight: 1, n: 2.5}]\nquestions: [{template: '{{ text }}'}]\n", r"penalties\[0\]\.n: expected int"),
    ("name: t\npenalties: [{weight: 1, n: 99}]\nquestions: [{template: '{{ text }}'}]\n", r"penalties\[0\]\.n: must be a whole number"),
    ("name: t\npenalties: [{weight: 1, ngram: 2}]\nquestions: [{template: '{{ text }}'}]\n", r"penalties\[0\]: unknown key\(s\) \['ngram'\]"),
    ("name: t\npenalties: [3]\nquestions: [{template: '{{ text }}'}]\n", r"penalties\[0\]: expected a mapping"),
])
def test_validation_names_file_and_field(tmp_path, body, match):
    path = write(tmp_path, body)
    with pytest.raises(PromptError, match=match) as info:
        load_prompt_set(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("spec, match", [
    ("sentimentt", r"no prompt set named 'sentimentt' \(did you mean 'sentiment'\?\); available: answer_grader"),
    ("Detox", r"no prompt set named 'Detox' \(did you mean 'detox'\?\)"),
    ("sentiment.yaml", r"sentiment.yaml: no such prompt file \(did you mean 'sentiment', the prompt set, named without"),
    ("detox.yml", r"detox.yml: no such prompt file \(did you mean 'detox', the prompt set"),
    ("nothing_alike.yaml", r"nothing_alike.yaml: no such prompt file$"),
    ("elsewhere/sentiment.yaml", r"sentiment.yaml: no such prompt file$"),  # a path of its own: no guess
])
def test_a_mistyped_prompt_name_gets_the_shipped_set_it_resembles(spec, match):
    with pytest.raises(PromptError, match=match):
        load_prompt_set(spec)


def test_a_choice_in_the_wrong_case_is_pointed_at(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: t\nquestions: [{template: '{{ text }} ok?', reward_answer: 'No'}]\n")
    with pytest.raises(PromptError, match=r"reward_answer: 'No' is not one of yes, no \(did you mean 'no'\?\)"):
        load_prompt_set(path)


def test_declared_fields_render_and_missing_field_is_clear():
    ps = load_prompt_set("answer_grader")
    (q,) = ps.render({"prompt": "2+2?", "completion": "4", "reference": "four"})
    assert "Reference answer: four" in q.user and "Candidate answer: 4" in q.user
    with pytest.raises(InputError, match=r"item 3: missing field\(s\) \['reference'\]"):
        ps.render({"prompt": "2+2?", "completion": "4"}, index=3)
    from zyn.errors import MissingFieldError

    with pytest.raises(MissingFieldError, match=r"item 2: missing field\(s\) \['reference'\].*a plain text gives "
                                                 r"only 'text': pass records, e.g. \{\"text\": ..., \"reference\": ...\}"):
        ps.render("4", index=2)  # was: "'reference' is undefined", an InputError that no hook's advice caught


@pytest.mark.parametrize("missing", [None, float("nan")], ids=["None", "NaN"])
def test_a_missing_value_is_refused_where_printed_not_judged_as_text(missing):
    from zyn.errors import MissingFieldError

    ps = load_prompt_set("answer_grader")
    with pytest.raises(MissingFieldError, match=r"item 2: question 'correct' prints field\(s\) \['reference'\] "
                                                 r"with no value.*\{% if reference %\}"):
        ps.render({"prompt": "2+2?", "completion": "4", "reference": missing}, index=2)
    pairwise = load_prompt_set("pairwise")  # a missing value the template only tests is no value
    (q,) = pairwise.render({"text": "", "a": "Paris.", "b": "Lyon.", "question": missing})
    assert q.user.startswith("Response A:\nParis.") and "None" not in q.user and "nan" not in q.user
    with pytest.raises(MissingFieldError, match=r"prints field\(s\) \['b'\] with no value"):  # not 'question'
        pairwise.render({"text": "", "a": "Paris.", "b": missing, "question": missing})
    nested = PromptSet(name="n", questions=(Question(name="q", template="{{ text }} by {{ meta.author }}?"),),
                       fields=("meta",))
    with pytest.raises(MissingFieldError, match="prints a value inside a field with no value"):
        nested.render({"text": "A poem", "meta": {"author": None}})
    assert nested.render({"text": "A poem", "meta": {"author": 0.0}})[0].user == "A poem by 0.0?"


def test_pandas_missing_cells_are_refused_too():
    pd = pytest.importorskip("pandas")
    from zyn.errors import MissingFieldError

    ps = load_prompt_set("answer_grader")
    for cell in (pd.NA, pd.NaT):
        with pytest.raises(MissingFieldError, match=r"\['reference'\]"):
            ps.render({"prompt": "2+2?", "completion": "4", "reference": cell})


def test_segments_mark_only_the_text_cuttable():
    (q,) = load_prompt_set("sentiment").render("Great film")
    assert q.segments == (("<review>\n", False), ("Great film", True),
                          ("\n</review>\n\nIs the reviewer's opinion of the film favourable?", False))


def test_text_is_prompt_plus_completion():
    (q,) = load_prompt_set("sentiment").render({"prompt": "This movie ", "completion": "rocks"})
    assert "<review>\nThis movie rocks\n</review>" in q.user


def test_messages_record():
    ps = PromptSet("m", (Question("q", "{{ prompt }} => {{ completion }}"),))
    msgs = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello!"}]
    (q,) = ps.render({"messages": msgs})
    assert q.user == "hi => hello!"


@pytest.mark.parametrize("item, match", [
    (None, "expected a string or a record"),
    (42, "expected a string or a record"),
    ({"text": 5}, "field 'text' must be a string"),
    ({"foo": "bar"}, "a record needs 'text'"),
    ({"messages": "hi"}, "'messages' must be a non-empty list"),
])
def test_bad_items(item, match):
    with pytest.raises(InputError, match=match):
        load_prompt_set("sentiment").render(item, index=0)


def test_sandbox_blocks_attribute_escape(tmp_path):
    path = write(tmp_path, "name: t\nquestions: [{template: \"{{ text.__class__.__mro__ }}\"}]\n")
    with pytest.raises(PromptError, match="cannot render"):
        load_prompt_set(path)


def test_calibration_roundtrip(tmp_path):
    ps = load_prompt_set("sentiment_robust").with_calibration({"repetitive": (0.5, -1.0)})
    ps.to_yaml(tmp_path / "cal.yaml")
    again = load_prompt_set(tmp_path / "cal.yaml")
    assert again.questions[1].calibration == (0.5, -1.0) and again == ps
    with pytest.raises(PromptError, match="no question named"):
        ps.with_calibration({"nope": (1.0, 0.0)})


def test_penalties_read_the_judged_text_and_round_trip(tmp_path):
    path = write(tmp_path, "name: t\nreward: logodds\npenalties: [{kind: repeated_ngrams, n: 2, weight: 4}]\n"
                           "questions: [{template: '{{ text }} ok?'}]\n")
    ps = load_prompt_set(path)
    assert ps.penalties == (Penalty("repeated_ngrams", 4.0, 2),)
    twice = "great film great film"  # 3 bigrams, 1 seen before
    assert ps.penalty(["a fine film", twice]) == [0.0, 4.0 / 3]
    # the judged text: a completion without its prompt, the last assistant turn of a chat
    assert ps.penalty([{"prompt": "great film great film", "completion": " a fine one"}]) == [0.0]
    assert ps.penalty([{"prompt": "Say it.", "completion": twice}]) == [4.0 / 3]
    chat = [{"role": "user", "content": twice}, {"role": "assistant", "content": "Sure."}]
    assert ps.penalty([{"messages": chat}]) == [0.0]
    ps.to_yaml(tmp_path / "again.yaml")
    assert load_prompt_set(tmp_path / "again.yaml") == ps
    assert load_prompt_set("sentiment").penalty(["a a a a"]) is None  # no penalties: nothing to compute
    with pytest.raises(InputError, match="item 1"):  # a bad record is named as in scoring
        ps.penalty(["fine", 3])


def test_prompt_set_pickles():
    ps = load_prompt_set("sentiment")
    assert pickle.loads(pickle.dumps(ps)) == ps


def test_unknown_name_lists_available():
    with pytest.raises(PromptError, match="available: .*sentiment"):
        load_prompt_set("sentimnet")


def test_empty_variable_is_falsy_in_templates():
    ps = PromptSet("e", (Question("q", "{% if prompt %}Q: {{ prompt }}\n{% endif %}A: {{ completion }}"),))
    (q,) = ps.render({"prompt": "", "completion": "hi"})
    assert q.user == "A: hi"


def test_a_record_whose_question_is_under_another_name_is_warned_about():
    ps = load_prompt_set("answer_grader")
    with pytest.warns(UserWarning, match=r"item 0 gives no 'prompt', which prompt set 'answer_grader' reads .* "
                                         r"field\(s\) \['question'\] that no template reads"):
        ps.render({"question": "Capital of France?", "completion": "Paris", "reference": "Paris"})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ps.render({"prompt": "Capital of France?", "completion": "Paris", "reference": "Paris"})
        ps.render({"completion": "Paris", "reference": "Paris"})  # nothing else given: nothing to point at
        load_prompt_set("sentiment").render({"completion": "fine", "id": 3})  # its template reads no prompt
