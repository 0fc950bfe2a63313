"""Ship the judge prompts the team wrote: version 1 of ja_pairwise and ja_grading.

The values are copied here as they were when this migration was written (a migration must not
change when judging/engine/presets.py does); judging.prompts.judge_presets_install restores the
same rows after a database is emptied.
"""

from django.db import migrations

PRESETS = {
    "ja_pairwise": {
        "description": "The team's Japanese pairwise judge: five points, order ignored, last line 1 / 2 / 3",
        "kind": "pairwise",
        "system_prompt": "あなたは日本語の回答を公平に比べる審査員です。",
        "template": "ある質問への二つの回答を読み、どちらが良い回答かを判定してください。\n\n次の点から総合的に判断してください。\n- 有用性: 質問した人の役に立つか\n- 関連性: 質問にきちんと答えているか\n- 正確さ: 事実や計算に誤りがないか\n- 詳しさ: 必要なことを過不足なく説明しているか\n- 日本語の質: 自然で読みやすい日本語か\n\n回答が示された順番や、回答の長さそのものを判断の理由にしないでください。日本語で書かれていない回答は低く評価してください。\n{% if criteria %}\n\nこの質問で特に見るべき点:\n{{ criteria }}\n{% endif %}\n{% if reference %}\n\n参考になる模範解答:\n{{ reference }}\n{% endif %}\n\n[質問]\n{{ question }}\n\n[回答1]\n{{ answer_1 }}\n\n[回答2]\n{{ answer_2 }}\n\nまず短く理由を書き、最後の行には判定の数字だけを書いてください。\n回答1が良ければ 1、回答2が良ければ 2、同じくらいなら 3 です。\n",
        "verdict_format": "last_line_123",
        "score_min": 1,
        "score_max": 5,
    },
    "ja_grading": {
        "description": "The team's Japanese grader: a 1-5 score against the reference and criteria",
        "kind": "grading",
        "system_prompt": "あなたは日本語の回答を採点する公平な審査員です。",
        "template": "ある質問への回答を 1 から 5 の整数で採点してください。\n\n次の点から総合的に判断してください。\n- 有用性: 質問した人の役に立つか\n- 関連性: 質問にきちんと答えているか\n- 正確さ: 事実や計算に誤りがないか\n- 詳しさ: 必要なことを過不足なく説明しているか\n- 日本語の質: 自然で読みやすい日本語か\n\n回答の長さそのものを評価の理由にしないでください。日本語で書かれていない回答は 1 点としてください。\n5: 申し分ない 4: 小さな不足がある 3: 一部に誤りや不足がある\n2: 大きな誤りがある 1: 質問に答えていない\n{% if reference %}\n\n模範解答 (これと比べて採点してください):\n{{ reference }}\n{% endif %}\n{% if criteria %}\n\n採点基準:\n{{ criteria }}\n{% endif %}\n\n[質問]\n{{ question }}\n\n[回答]\n{{ answer }}\n\nまず短く理由を書き、最後の行に「評価: 点数」の形で点数を書いてください。\n",
        "verdict_format": "score",
        "score_min": 1,
        "score_max": 5,
    },
}


def add_presets(apps, schema_editor):
    prompt_model = apps.get_model("judging", "JudgePrompt")
    for name, fields in PRESETS.items():
        if not prompt_model.objects.filter(name=name).exists():
            prompt_model.objects.create(name=name, version=1, **fields)


def remove_presets(apps, schema_editor):
    prompt_model = apps.get_model("judging", "JudgePrompt")
    prompt_model.objects.filter(name__in=PRESETS, version=1, runs__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [("judging", "0001_initial")]

    operations = [migrations.RunPython(add_presets, remove_presets)]
