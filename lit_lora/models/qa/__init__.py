"""QuestionAnswering's pieces: span decoding, answerability head, adapter ensembles."""
