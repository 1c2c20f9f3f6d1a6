"""Scoring generated images (CLIP-T, CLIP-I, DINO) and comparing model variants on the same prompts and seeds."""
