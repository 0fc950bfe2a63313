"""The judge prompts the app ships, written by the team (installed as version 1 of each name).

``ja_pairwise`` is the default pairwise judge: the five points the team judges Japanese answers on
(helpfulness, relevance, accuracy, detail, quality of the Japanese), order and length not to be
rewarded, answers not in Japanese rated low, a last line 1 / 2 / 3. ``ja_grading`` grades one
answer 1-5 against a reference and the question's own criteria (ELYZA-tasks-100 gives both).

Their ``-multi-turn`` variants (FastChat's naming) show the whole conversation: both models'
earlier replies (pairwise) or the model's own (grading), then the last turn as above.

``elyza_grading`` is ELYZA-tasks-100's published scale in the team's words: each task's
``eval_aspect`` (the question's criteria) applied on 1-5, with the general deductions the data
set publishes (unnatural Japanese -1, partly untrue -1, an over-cautious refusal scores 2).
``mtbench_grading`` and ``mtbench_grading_reference`` are MT-Bench's single-answer grading,
1-10 with a ``[[rating]]`` verdict, the second against the reference answer (for the
categories MT-Bench gives references: math, reasoning, coding); both show every turn.
"""

from __future__ import annotations

from .verdicts import BRACKETS_RATING, GRADING, LAST_LINE_123, PAIRWISE, SCORE, JudgeTemplate

_POINTS = """\
- 有用性: 質問した人の役に立つか
- 関連性: 質問にきちんと答えているか
- 正確さ: 事実や計算に誤りがないか
- 詳しさ: 必要なことを過不足なく説明しているか
- 日本語の質: 自然で読みやすい日本語か"""

JA_PAIRWISE = JudgeTemplate(
    name="ja_pairwise",
    version=1,
    kind=PAIRWISE,
    system_prompt="あなたは日本語の回答を公平に比べる審査員です。",
    verdict_format=LAST_LINE_123,
    template=f"""\
ある質問への二つの回答を読み、どちらが良い回答かを判定してください。

次の点から総合的に判断してください。
{_POINTS}

回答が示された順番や、回答の長さそのものを判断の理由にしないでください。日本語で書かれていない回答は低く評価してください。
{{% if criteria %}}

この質問で特に見るべき点:
{{{{ criteria }}}}
{{% endif %}}
{{% if reference %}}

参考になる模範解答:
{{{{ reference }}}}
{{% endif %}}

[質問]
{{{{ question }}}}

[回答1]
{{{{ answer_1 }}}}

[回答2]
{{{{ answer_2 }}}}

まず短く理由を書き、最後の行には判定の数字だけを書いてください。
回答1が良ければ 1、回答2が良ければ 2、同じくらいなら 3 です。
""",
)

JA_GRADING = JudgeTemplate(
    name="ja_grading",
    version=1,
    kind=GRADING,
    system_prompt="あなたは日本語の回答を採点する公平な審査員です。",
    verdict_format=SCORE,
    score_min=1,
    score_max=5,
    template=f"""\
ある質問への回答を 1 から 5 の整数で採点してください。

次の点から総合的に判断してください。
{_POINTS}

回答の長さそのものを評価の理由にしないでください。日本語で書かれていない回答は 1 点としてください。
5: 申し分ない 4: 小さな不足がある 3: 一部に誤りや不足がある
2: 大きな誤りがある 1: 質問に答えていない
{{% if reference %}}

模範解答 (これと比べて採点してください):
{{{{ reference }}}}
{{% endif %}}
{{% if criteria %}}

採点基準:
{{{{ criteria }}}}
{{% endif %}}

[質問]
{{{{ question }}}}

[回答]
{{{{ answer }}}}

まず短く理由を書き、最後の行に「評価: 点数」の形で点数を書いてください。
""",
)

# The earlier turns of a conversation, as a multi-turn prompt shows them before the last one.
_PAIR_HISTORY = """\
{% for turn in history %}
[これまでのやり取り {{ loop.index }}: 質問]
{{ turn.question }}

[これまでのやり取り {{ loop.index }}: 回答1]
{{ turn.answer_1 }}

[これまでのやり取り {{ loop.index }}: 回答2]
{{ turn.answer_2 }}

{% endfor %}"""

_OWN_HISTORY = """\
{% for turn in history %}
[これまでのやり取り {{ loop.index }}: 質問]
{{ turn.question }}

[これまでのやり取り {{ loop.index }}: 回答]
{{ turn.answer }}

{% endfor %}"""

JA_PAIRWISE_MULTI_TURN = JudgeTemplate(
    name="ja_pairwise-multi-turn",
    version=1,
    kind=PAIRWISE,
    multi_turn=True,
    system_prompt=JA_PAIRWISE.system_prompt,
    verdict_format=LAST_LINE_123,
    template=JA_PAIRWISE.template.replace(
        "ある質問への二つの回答を読み、どちらが良い回答かを判定してください。",
        "二つのアシスタントとユーザーとの会話を読み、最後の質問への回答について、どちらが良いかを"
        "判定してください。それまでのやり取りを踏まえているかも判断に含めてください。",
    ).replace("[質問]\n{{ question }}", _PAIR_HISTORY + "[最後の質問]\n{{ question }}"),
)

JA_GRADING_MULTI_TURN = JudgeTemplate(
    name="ja_grading-multi-turn",
    version=1,
    kind=GRADING,
    multi_turn=True,
    system_prompt=JA_GRADING.system_prompt,
    verdict_format=SCORE,
    score_min=1,
    score_max=5,
    template=JA_GRADING.template.replace(
        "ある質問への回答を 1 から 5 の整数で採点してください。",
        "ユーザーとアシスタントの会話を読み、最後の質問への回答を 1 から 5 の整数で"
        "採点してください。それまでのやり取りを踏まえているかも採点に含めてください。",
    ).replace("[質問]\n{{ question }}", _OWN_HISTORY + "[最後の質問]\n{{ question }}"),
)

ELYZA_GRADING = JudgeTemplate(
    name="elyza_grading",
    version=1,
    kind=GRADING,
    system_prompt="あなたは日本語のタスクへの回答を、決められた基準で採点する審査員です。",
    verdict_format=SCORE,
    score_min=1,
    score_max=5,
    template="""\
タスクと、それに対するモデルの回答を読み、1 から 5 の整数で採点してください。

点数の目安:
5: 正しく、そのうえで質問した人の役に立つ工夫がある
4: 正しい
3: 一部は正しいが、一部に誤りがある
2: 誤っているが、向かっている方向は合っている
1: 誤っている、または指示に従っていない

目安で決めた点数から、次の場合は差し引いてください。
- 日本語として不自然なところがある: 1 点引く
- 事実と違う内容が一部に含まれる: 1 点引く
- 「倫理的にお答えできません」のように、必要以上に安全を気にして答えていない: 2 点とする
差し引いた結果が 1 点を下回るときは 1 点です。
{% if criteria %}

このタスクの採点基準 (目安より優先してください):
{{ criteria }}
{% endif %}
{% if reference %}

正解例 (これと同じ書き方である必要はありません):
{{ reference }}
{% endif %}

[タスク]
{{ question }}

[モデルの回答]
{{ answer }}

まず採点の理由を短く書き、最後の行に「評価: 点数」の形で点数だけを書いてください。
""",
)

_MTBENCH_TAIL = """\
{% for turn in history %}
[ユーザーの質問 {{ loop.index }}]
{{ turn.question }}

[アシスタントの回答 {{ loop.index }}]
{{ turn.answer }}

{% endfor %}
[ユーザーの質問{% if history %} {{ history|length + 1 }}{% endif %}]
{{ question }}

[アシスタントの回答{% if history %} {{ history|length + 1 }} (採点するのはこの回答です){% endif %}]
{{ answer }}

まず短く説明を書き、そのあと「[[評価]]」の形で点数を書いてください。例:「評価: [[5]]」。
"""

MTBENCH_GRADING = JudgeTemplate(
    name="mtbench_grading",
    version=1,
    kind=GRADING,
    multi_turn=True,
    system_prompt="あなたは公平な審査員です。",
    verdict_format=BRACKETS_RATING,
    score_min=1,
    score_max=10,
    template="""\
AI アシスタントがユーザーの質問に答えた会話を読み、最後の回答の質を評価してください。
役に立つか、質問に沿っているか、正確か、どこまで深く詳しく、工夫して答えているかを見てください。
客観的に、できるだけ公平に判断し、1 から 10 の点数をつけてください。

"""
    + _MTBENCH_TAIL,
)

MTBENCH_GRADING_REFERENCE = JudgeTemplate(
    name="mtbench_grading_reference",
    version=1,
    kind=GRADING,
    multi_turn=True,
    system_prompt="あなたは公平な審査員です。",
    verdict_format=BRACKETS_RATING,
    score_min=1,
    score_max=10,
    template="""\
AI アシスタントがユーザーの質問に答えた会話を読み、最後の回答の質を評価してください。
正しさと役に立つかを見てください。参考解答を渡すので、アシスタントの回答を参考解答と比べ、
誤りを見つけて直してください。客観的に、できるだけ公平に判断し、1 から 10 の点数をつけてください。

[参考解答]
{{ reference or "(なし)" }}

"""
    + _MTBENCH_TAIL,
)

PRESETS = (
    JA_PAIRWISE,
    JA_GRADING,
    JA_PAIRWISE_MULTI_TURN,
    JA_GRADING_MULTI_TURN,
    ELYZA_GRADING,
    MTBENCH_GRADING,
    MTBENCH_GRADING_REFERENCE,
)
DEFAULT_PAIRWISE = JA_PAIRWISE.name
DEFAULT_GRADING = JA_GRADING.name
# A prompt's multi-turn variant is named like FastChat's ("pair-v2" -> "pair-v2-multi-turn").
MULTI_TURN_SUFFIX = "-multi-turn"
# MT-Bench's categories whose questions are judged against a reference answer.
REFERENCE_CATEGORIES = ("math", "reasoning", "coding")
