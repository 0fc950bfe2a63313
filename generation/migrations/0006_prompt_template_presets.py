"""Ship the prompt-template presets; existing models keep their format, now a template name.

The presets are copied here as they were when this migration was written (a migration must not
change when generation/engine/presets.py does).
"""

from django.db import migrations

PRESETS = {
    "line_sft": {
        "description": "LINE japanese-large-lm instruction SFT: ユーザー: …\\nシステム: …",
        "kind": "turns",
        "user_template": "ユーザー: {content}\n",
        "assistant_template": "システム: {content}",
        "turn_separator": "\n",
        "stop_strings": ["ユーザー:", "ユーザー："],
    },
    "rinna": {
        "description": "rinna japanese-gpt-neox instruction: turns joined by <NL>",
        "kind": "turns",
        "user_template": "ユーザー: {content}<NL>",
        "assistant_template": "システム: {content}",
        "turn_separator": "<NL>",
        "newline_token": "<NL>",
        "stop_strings": ["ユーザー:", "ユーザー："],
    },
    "calm2": {
        "description": "CyberAgent calm2-7b-chat: USER: …\\nASSISTANT: …",
        "kind": "turns",
        "user_template": "USER: {content}\n",
        "assistant_template": "ASSISTANT: {content}",
        "turn_separator": "\n",
        "stop_strings": ["USER:"],
    },
    "llm_jp": {
        "description": "llm-jp instruct: preamble, ### 指示: / ### 応答:",
        "kind": "turns",
        "system_prompt": "以下は、タスクを説明する指示です。要求を適切に満たす応答を書きなさい。",
        "system_template": "{system}",
        "user_template": "\n\n### 指示:\n{content}",
        "assistant_template": "\n\n### 応答:\n{content}",
        "stop_strings": ["### 指示:"],
    },
    "elyza_llama2": {
        "description": "ELYZA-japanese-Llama-2 instruct: Llama-2 [INST] <<SYS>> with "
        "a Japanese system prompt",
        "kind": "jinja",
        "system_prompt": "あなたは誠実で優秀な日本人のアシスタントです。",
        "jinja_source": "{% for m in messages if m.role != 'system' %}{% if m.role "
        "== 'user' %}{{ bos_token }}[INST] {% if loop.first and "
        "system_prompt %}<<SYS>>\n"
        "{{ system_prompt }}\n"
        "<</SYS>>\n"
        "\n"
        "{% endif %}{{ m.content }} [/INST] {% else %}{{ m.content "
        "}} {{ eos_token }}{% endif %}{% endfor %}",
        "stop_strings": ["[INST]"],
    },
    "alpaca_ja": {
        "description": "Alpaca layout in Japanese: preamble, ### 指示: / ### 応答:",
        "kind": "turns",
        "system_prompt": "以下は、ある作業を記述した指示です。依頼を適切に完了させる回答を書いてください。",
        "system_template": "{system}",
        "user_template": "\n\n### 指示:\n{content}",
        "assistant_template": "\n\n### 応答:\n{content}",
        "stop_strings": ["### 指示:"],
    },
    "chat_template": {
        "description": "The tokenizer's own chat template (tokenizer_config.json)",
        "kind": "chat_template",
    },
    "plain": {
        "description": "The question alone; the reply follows it directly",
        "kind": "turns",
        "user_template": "{content}",
        "assistant_template": "{content}",
        "turn_separator": "\n\n",
        "end_with_eos": True,
    },
}


def add_presets(apps, schema_editor):
    template_model = apps.get_model("generation", "PromptTemplate")
    for name, fields in PRESETS.items():
        template_model.objects.get_or_create(name=name, version=1, defaults=fields)
    # Every model must name an existing template; the four old formats all have a preset.
    language_model = apps.get_model("generation", "LanguageModel")
    unknown = language_model.objects.exclude(prompt_format__in=PRESETS).values_list(
        "prompt_format", flat=True
    )
    if unknown:
        raise RuntimeError(f"models name unknown prompt formats: {sorted(set(unknown))}")


def remove_presets(apps, schema_editor):
    template_model = apps.get_model("generation", "PromptTemplate")
    template_model.objects.filter(name__in=PRESETS, version=1, runs__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [("generation", "0005_templates_endpoints_turns")]

    operations = [migrations.RunPython(add_presets, remove_presets)]
