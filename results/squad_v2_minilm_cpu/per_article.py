"""Score `lit_lora predict` answers per article against a SQuAD v2 file, beside "no answer" everywhere.

Usage: python per_article.py PREDICTIONS_JSONL SQUAD_JSON. Prints, per article and overall, the
questions, the official exact / F1 of the predictions and the all-no-answer baseline's exact (= F1),
then the net questions (answerable ones now exact, minus unanswerable ones now answered) and the paired
z of that per-question difference.
"""

import json
import math
import sys

from lit_lora.metrics.squad_v2 import score

predictions_path, squad_path = sys.argv[1], sys.argv[2]
with open(predictions_path) as handle:
    answers = {row["id"]: row["answer"] for row in map(json.loads, handle)}
with open(squad_path) as handle:
    articles = json.load(handle)["data"]

differences: list[int] = []
rows = []
for article in articles:
    questions = [q for paragraph in article["paragraphs"] for q in paragraph["qas"]]
    exacts, f1s, baseline = 0, 0.0, 0
    for question in questions:
        gold = [] if question.get("is_impossible") else [a["text"] for a in question["answers"]]
        exact, f1 = score(gold, answers[question["id"]])
        exacts, f1s, baseline = exacts + exact, f1s + f1, baseline + (not gold)
        differences.append(exact - (not gold))
    rows.append((article["title"], len(questions), exacts, f1s, baseline))
rows.append(("all", *(sum(column) for column in list(zip(*rows, strict=True))[1:])))
print(f"{'article':44} {'questions':>9} {'exact':>6} {'F1':>6} {'no-answer baseline':>18}")
for title, count, exacts, f1s, baseline in rows:
    shares = (100 * exacts / count, 100 * f1s / count, 100 * baseline / count)
    print(f"{title:44} {count:9d} {shares[0]:6.2f} {shares[1]:6.2f} {shares[2]:18.2f}")
count = len(differences)
mean = sum(differences) / count
spread = math.sqrt(sum((d - mean) ** 2 for d in differences) / (count - 1) / count)
wins, losses = differences.count(1), differences.count(-1)
print(f"net questions vs the baseline: +{wins} - {losses} = {wins - losses:+d}, paired z {mean / spread:.2f}")
