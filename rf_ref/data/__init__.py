"The data: the Shapes renderer, natural-image sets, tokenizers and batches."
