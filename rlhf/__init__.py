"""RecFeedback's model side: settings, generation, reward model, PPO, rounds, evaluation, CLI.

Importing this package is cheap: nothing heavy (torch, transformers) is imported until a function
that needs it runs, so the Streamlit Label page and ``recfeedback --help`` stay fast.
"""

__version__ = "0.1.0"
