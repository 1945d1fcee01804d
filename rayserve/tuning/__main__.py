"""``python -m rayserve.tuning``: see ``rayserve.tuning.train.main``."""

from rayserve.tuning.train import main

if __name__ == "__main__":
    main()
