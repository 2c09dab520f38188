"""The photo model package (issue 15): builder, torch-free assembler, evaluation set and evaluator."""
