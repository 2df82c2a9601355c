"""A made-up SQuAD v2 file (answerable and unanswerable questions, contexts longer than one window),
and the data module and QA model tests build on it."""

from __future__ import annotations

from lit_lora import LoraSpec
from lit_lora.data import SquadV2DataModule
from lit_lora.models import QuestionAnswering

FILLER = "Travellers describe its markets, rivers and old stone bridges at great length in their diaries. "
FACTS = [
    ("Zembla", "Freedonia", "Anna Kowal"),
    ("Lorvik", "Tarsia", "Jonas Brell"),
    ("Quenby", "Mardova", "Ilse Varga"),
    ("Osterholt", "Vellia", "Piet Adler"),
]


def squad_json(facts=FACTS, filler_repeats: int = 3) -> dict:
    """Official-format SQuAD v2 data: per context two answerable and two unanswerable questions."""
    paragraphs = []
    for capital, country, founder in facts:
        context = FILLER * filler_repeats + f"The capital of {country} is {capital}. "
        context += f"{country} was founded by {founder}. " + FILLER
        qas = [
            (f"What is the capital of {country}?", capital),
            (f"Who founded {country}?", founder),
            (f"What is the largest lake of {country}?", None),
            (f"Who was the first king of {country}?", None),
        ]
        paragraphs.append(
            {
                "context": context,
                "qas": [
                    {
                        "id": f"{country}-{n}",
                        "question": question,
                        "answers": []
                        if text is None
                        else [{"text": text, "answer_start": context.index(text)}],
                        "is_impossible": text is None,
                    }
                    for n, (question, text) in enumerate(qas)
                ],
            }
        )
    return {"version": "v2.0", "data": [{"title": "Made up", "paragraphs": paragraphs}]}


def datamodule(model, path, **kwargs) -> SquadV2DataModule:
    kwargs = {"max_length": 64, "doc_stride": 24, "batch_size": 4, **kwargs}
    return SquadV2DataModule(
        tokenizer_name=str(model), train_file=str(path), validation_file=str(path), **kwargs
    )


def qa_model(model, **kwargs) -> QuestionAnswering:
    kwargs = {"learning_rate": 1e-2, "warmup_ratio": 0.0, **kwargs}
    return QuestionAnswering(str(model), adapter=LoraSpec(r=4, alpha=8, dropout=0.0), **kwargs)


def first_val_batch(model, path):
    data = datamodule(model, path)
    data.setup("validate")
    return next(iter(data.val_dataloader()))
