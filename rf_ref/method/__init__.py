"Representation Forcing itself: encoder, VQ, MoT backbone, flow matching, the model, sampling and training."
