"Recurrent Fast Weight Programmers as fast, correct PyTorch ops."
__version__ = "0.1.0"
