"""The judge prompts the app ships, written by the team (installed as version 1 of each name).

``ja_pairwise`` is the default pairwise judge: the five points the team judges Japanese answers on
(helpfulness, relevance, accuracy, detail, quality of the Japanese), order and length not to be
rewarded, answers not in Japanese rated low, a last line 1 / 2 / 3. ``ja_grading`` grades one
answer 1-5 against a reference and the question's own criteria (ELYZA-tasks-100 gives both).
"""

from __future__ import annotations

from .verdicts import GRADING, LAST_LINE_123, PAIRWISE, SCORE, JudgeTemplate

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

PRESETS = (JA_PAIRWISE, JA_GRADING)
DEFAULT_PAIRWISE = JA_PAIRWISE.name
DEFAULT_GRADING = JA_GRADING.name
