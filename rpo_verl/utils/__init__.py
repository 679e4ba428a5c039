"""Small helpers shared by rpo_verl's components (no Ray, Hydra or vLLM)."""
