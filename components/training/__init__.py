"""Training: data loading and augmentation, and the Lightning pieces that train the models.

Kept free of re-exports so that importing one training module does not pull in the
others (torch, torchvision and Lightning are slow to import).
"""
