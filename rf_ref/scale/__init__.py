"The paper-scale path: Qwen3 and DINOv3 weights, meta-device build, packing, FSDP, DCP and torchrun."
