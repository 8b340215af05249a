"What a model has learned: the Shapes judge, ShapesEval, the plan probes, digits and reports."
