"""ponder.inference: the light half of ponder (torch + transformers, vLLM optional).

Tasks and graders, batched generation, and (as they land) verifiers, PRM-guided search and revision
loops. It never imports the training stack (trl, peft, accelerate, deepspeed, datasets).
"""
