"""Split a SQuAD file by article: all but the last two train, the last two are held out whole.

Usage: python article_split.py SOURCE_JSON RUN_DIR. Writes RUN_DIR/train_articles.json and
RUN_DIR/heldout_articles.json (derived files stay in the ignored run folder, never in the project).
"""

import json
import sys

source, run = sys.argv[1], sys.argv[2]
with open(source) as handle:
    squad = json.load(handle)
articles = squad["data"]
for name, part in (("train_articles.json", articles[:-2]), ("heldout_articles.json", articles[-2:])):
    with open(f"{run}/{name}", "w") as handle:
        json.dump({**squad, "data": part}, handle)
    questions = sum(len(p["qas"]) for a in part for p in a["paragraphs"])
    print(name, len(part), "articles", questions, "questions")
