"""The prompt templates the app ships, as data (migrated into PromptTemplate rows).

Each preset follows its model card's documented format; the tests render known conversations
and compare them with strings written from the cards. Rendered text is the model's whole input
and is tokenized without adding special tokens: a template that wants a BOS token writes it.

Sources of the formats:
- line_sft: line-corporation/japanese-large-lm-3.6b-instruction-sft ("ユーザー: …\\nシステム: ").
- rinna: rinna/japanese-gpt-neox-3.6b-instruction-sft (turns joined by "<NL>", newlines as <NL>).
- calm2: cyberagent/calm2-7b-chat ("USER: …\\nASSISTANT: ").
- llm_jp: the llm-jp instruct cards (the Japanese instruction preamble, "### 指示:" / "### 応答:").
- elyza_llama2: elyza/ELYZA-japanese-Llama-2-7b-instruct (Llama-2 [INST] with <<SYS>> and the
  card's Japanese system prompt).
- alpaca_ja: the Alpaca layout as Japanese translations of the Stanford Alpaca data write it.
"""

from __future__ import annotations

ELYZA_SYSTEM = "あなたは誠実で優秀な日本人のアシスタントです。"
LLM_JP_PREAMBLE = "以下は、タスクを説明する指示です。要求を適切に満たす応答を書きなさい。"
ALPACA_JA_PREAMBLE = (
    "以下は、ある作業を記述した指示です。依頼を適切に完了させる回答を書いてください。"
)

# Llama-2 chat: the system block sits inside the first [INST]; every later exchange is wrapped
# in its own BOS ... EOS.
ELYZA_JINJA = (
    "{% for m in messages if m.role != 'system' %}"
    "{% if m.role == 'user' %}"
    "{{ bos_token }}[INST] "
    "{% if loop.first and system_prompt %}<<SYS>>\n{{ system_prompt }}\n<</SYS>>\n\n{% endif %}"
    "{{ m.content }} [/INST] "
    "{% else %}{{ m.content }} {{ eos_token }}{% endif %}"
    "{% endfor %}"
)

PRESETS: dict[str, dict] = {
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
        "system_prompt": LLM_JP_PREAMBLE,
        "system_template": "{system}",
        "user_template": "\n\n### 指示:\n{content}",
        "assistant_template": "\n\n### 応答:\n{content}",
        "stop_strings": ["### 指示:"],
    },
    "elyza_llama2": {
        "description": "ELYZA Llama-2 instruct: [INST] <<SYS>>, Japanese system prompt",
        "kind": "jinja",
        "system_prompt": ELYZA_SYSTEM,
        "jinja_source": ELYZA_JINJA,
        "stop_strings": ["[INST]"],
    },
    "alpaca_ja": {
        "description": "Alpaca layout in Japanese: preamble, ### 指示: / ### 応答:",
        "kind": "turns",
        "system_prompt": ALPACA_JA_PREAMBLE,
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
