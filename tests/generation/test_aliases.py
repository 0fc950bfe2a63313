"""Model and maker aliases (kana, katakana, phrases): kept on the model, edited in the admin and
the API, and used by the self-identification finder besides the name, path and maker."""

from __future__ import annotations

import pytest

from annotation import identity
from annotation.models import IdentityFlag
from annotation.studies import TEXT_NAMES_MODEL, study_create
from evalsite.errors import ServiceError
from generation import aliases
from generation.importers import ParsedQuestion
from generation.models import LanguageModel
from generation.registry import language_model_register, prompt_set_create
from generation.runs import generation_run_create_imported
from tests.conftest import logged_in

pytestmark = pytest.mark.django_db


def _model(**fields) -> LanguageModel:
    """An unsaved model: the finder reads only its fields."""
    defaults = {"name": "m", "name_or_path": "", "maker": "", "aliases": [], "maker_aliases": []}
    return LanguageModel(**{**defaults, **fields})


def _found(text: str, *models: LanguageModel) -> list[tuple[str, str]]:
    terms = identity.model_terms(models)
    return [
        (s.kind, s.text)
        for s in identity.find_identity_spans(text, terms)
        if s.kind in (identity.NAME, identity.MAKER)
    ]


def test_aliases_are_found_as_the_model_s_name_and_maker_aliases_as_its_maker():
    rinna = _model(name="rinna-ppo", maker="rinna", aliases=["りんな"], maker_aliases=["リンナ社"])
    assert _found("こんにちは、りんなです。", rinna) == [(identity.NAME, "りんな")]
    assert _found("リンナ社が作りました", rinna) == [(identity.MAKER, "リンナ社")]


def test_a_katakana_alias_is_a_word_not_part_of_a_longer_katakana_word():
    line = _model(name="line-sft", maker="LINE", maker_aliases=["ライン"])
    assert _found("ラインが開発したモデルです。", line) == [(identity.MAKER, "ライン")]
    assert _found("私はラインのAIです", line) == [(identity.MAKER, "ライン")]
    for text in ("オンラインで学ぶ", "ガイドラインに従う", "ラインナップを見る", "ラインー"):
        assert _found(text, line) == [], text
    # Half-width katakana runs on as well.
    assert _found("ｵﾝﾗｲﾝ", _model(maker_aliases=["ﾗｲﾝ"])) == []


def test_two_character_japanese_aliases_count_but_two_latin_letters_do_not():
    rakuten = _model(maker="Rakuten", maker_aliases=["楽天", "RA"])
    assert _found("楽天が開発", rakuten) == [(identity.MAKER, "楽天")]
    assert _found("RA is short", rakuten) == []


def test_a_self_introduction_phrase_can_be_an_alias():
    elyza = _model(name="elyza-7b", aliases=["私はELYZAによって"])
    assert (identity.NAME, "私はELYZAによって") in _found(
        "私はELYZAによって訓練されました。", elyza
    )


def _imported_runs(models: dict[str, tuple[str, dict]]):
    """One imported run per model name, answering one question with the text given."""
    prompt_set = prompt_set_create(
        name="aliases", questions=[ParsedQuestion(line=1, text="あなたは誰ですか？")]
    )
    question = prompt_set.questions.get()
    runs = []
    for name, (text, fields) in models.items():
        model = language_model_register(name=name, name_or_path="", **fields)
        runs.append(
            generation_run_create_imported(
                model=model, prompt_set=prompt_set, answers={question.pk: text}
            )
        )
    return runs


def test_opening_a_study_flags_answers_that_use_an_alias():
    runs = _imported_runs(
        {
            "zq-chat-3b": (
                "私はりんなではありません。ズーク社のモデルです。",
                {"maker": "Zqcorp", "maker_aliases": ["ズーク社"]},
            ),
            "rn-gpt": ("こんにちは！", {"maker": "Rnco", "aliases": ["りんな"]}),
        }
    )
    study = study_create(name="alias-study", runs=runs, open_now=True)
    flags = {(f.kind, f.text) for f in IdentityFlag.objects.filter(study=study)}
    assert (identity.NAME, "りんな") in flags  # another model's alias unblinds as well
    assert (identity.MAKER, "ズーク社") in flags


def test_study_texts_may_not_name_a_model_by_an_alias():
    runs = _imported_runs(
        {"a-model": ("一", {"maker_aliases": ["サイバーエージェント"]}), "b-model": ("二", {})}
    )
    with pytest.raises(ServiceError) as caught:
        study_create(name="s", runs=runs, instructions="サイバーエージェントのモデルと比べます")
    assert str(caught.value) == TEXT_NAMES_MODEL.format(
        field="instructions", term="サイバーエージェント"
    )


def test_aliases_are_stored_stripped_without_blanks_or_repeats():
    model = language_model_register(
        name="x", name_or_path="", aliases=[" りんな ", "", "りんな", "リンナ"]
    )
    assert model.aliases == ["りんな", "リンナ"]
    with pytest.raises(ServiceError, match="aliases must be a list of names"):
        language_model_register(name="y", name_or_path="", aliases="りんな")
    with pytest.raises(ServiceError, match="longer than 200 characters"):
        language_model_register(name="z", name_or_path="", maker_aliases=["あ" * 201])
    assert not LanguageModel.objects.filter(name__in=["y", "z"]).exists()


def test_suggestions_for_known_makers():
    assert aliases.suggested_maker_aliases("rinna") == ["りんな", "リンナ"]
    assert "サイバーエージェント" in aliases.suggested_maker_aliases("cyberagent")
    assert "ライン" in aliases.suggested_maker_aliases("LINE")
    assert aliases.suggested_maker_aliases("Zqcorp") == []


def test_staff_set_label_and_aliases_through_the_api(staff_user):
    client = logged_in(staff_user)
    response = client.post(
        "/api/models/",
        {
            "name": "rinna-sft",
            "name_or_path": "",
            "maker": "rinna",
            "display_label": "Model R",
            "aliases": ["りんな"],
            "maker_aliases": ["リンナ", " "],
            "prompt_format": "rinna",
        },
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["display_label"], body["aliases"], body["maker_aliases"]) == (
        "Model R",
        ["りんな"],
        ["リンナ"],
    )
    model = LanguageModel.objects.get(name="rinna-sft")
    assert model.label == "Model R"
    bad = client.patch(
        f"/api/models/{model.pk}/", {"aliases": {"a": 1}}, content_type="application/json"
    )
    assert bad.status_code == 400
    assert "aliases must be a list of names" in bad.content.decode()
    model.refresh_from_db()
    assert model.aliases == ["りんな"]


def test_the_api_shows_endpoint_fields_but_only_the_name_of_the_key_variable(
    admin_user, monkeypatch
):
    monkeypatch.setenv("SERVED_KEY", "sk-very-secret-value")
    client = logged_in(admin_user)
    response = client.post(
        "/api/models/",
        {
            "name": "served",
            "endpoint_url": "http://127.0.0.1:9/v1",
            "endpoint_model": "qwen-7b",
            "api_key_env": "SERVED_KEY",
            "endpoint_concurrency": 8,
            "prompt_format": "plain",
        },
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    listing = client.get("/api/models/").content.decode()
    assert "SERVED_KEY" in listing and "sk-very-secret-value" not in listing
    served = client.get(f"/api/models/{response.json()['id']}/").json()
    assert (served["endpoint_url"], served["endpoint_model"], served["endpoint_concurrency"]) == (
        "http://127.0.0.1:9/v1",
        "qwen-7b",
        8,
    )


def _admin_form(model: LanguageModel, **changes) -> dict:
    values = {
        "name": model.name,
        "name_or_path": model.name_or_path,
        "revision": model.revision,
        "maker": model.maker,
        "display_label": model.display_label,
        "aliases": "\n".join(model.aliases),
        "maker_aliases": "\n".join(model.maker_aliases),
        "prompt_format": model.prompt_format,
        "generation_defaults": "{}",
        "base_model": "",
        "adapter_path": model.adapter_path,
        "endpoint_url": model.endpoint_url,
        "endpoint_model": model.endpoint_model,
        "api_key_env": model.api_key_env,
        "endpoint_concurrency": str(model.endpoint_concurrency),
        "endpoint_requests_per_minute": "",
        **changes,
    }
    return values


def test_the_admin_edits_aliases_one_a_line_and_suggests_the_maker_s(admin_user):
    model = language_model_register(name="rinna-ppo", name_or_path="", maker="rinna")
    client = logged_in(admin_user)
    url = f"/admin/generation/languagemodel/{model.pk}/change/"
    page = client.get(url).content.decode()
    assert "りんな, リンナ" in page  # the suggestions the model's maker aliases lack
    response = client.post(
        url,
        _admin_form(
            model, aliases="りんな\n\n  ", maker_aliases="リンナ\nrinna株式会社", display_label="R"
        ),
    )
    assert response.status_code == 302, response.content.decode()[-3000:]
    model.refresh_from_db()
    assert (model.aliases, model.maker_aliases, model.label) == (
        ["りんな"],
        ["リンナ", "rinna株式会社"],
        "R",
    )
    page = client.get(url).content.decode()
    assert "りんな, リンナ" not in page and "りんな</textarea>" in page


def test_the_admin_lists_weights_endpoints_and_imported_models_apart(admin_user):
    language_model_register(name="w", name_or_path="tiny-0")
    language_model_register(
        name="e", endpoint_url="http://127.0.0.1:9/v1", endpoint_model="served-id"
    )
    language_model_register(name="i", name_or_path="")
    page = logged_in(admin_user).get("/admin/generation/languagemodel/").content.decode()
    assert "served-id @ http://127.0.0.1:9/v1" in page
    assert "(imported answers only)" in page and "tiny-0" in page


def test_staff_edit_a_served_model_s_label_but_not_where_its_key_goes(staff_user):
    model = language_model_register(
        name="served",
        endpoint_url="http://127.0.0.1:9/v1",
        endpoint_model="served-id",
        api_key_env="SERVED_KEY",
    )
    client = logged_in(staff_user)
    url = f"/admin/generation/languagemodel/{model.pk}/change/"
    page = client.get(url).content.decode()
    # Shown (the variable's name, never a key), but not a field staff may post.
    assert "SERVED_KEY" in page
    assert 'name="api_key_env"' not in page and 'name="endpoint_url"' not in page
    form = _admin_form(
        model, display_label="Served A", api_key_env="OTHER", endpoint_url="http://x"
    )
    response = client.post(url, form)
    assert response.status_code == 302, response.content.decode()[-3000:]
    model.refresh_from_db()
    assert (model.display_label, model.api_key_env, model.endpoint_url) == (
        "Served A",
        "SERVED_KEY",
        "http://127.0.0.1:9/v1",
    )
