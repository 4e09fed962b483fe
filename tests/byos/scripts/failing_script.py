"""A script that fails at step 2 on rank 1 (the tests look for its exit status and error tail).

Like a user's first script it never starts torch.distributed, so its traceback carries no "[rankN]:" prefix of
torch's own: only torchrun's prefix (``--tee``) tells whose it is. Rank 0 is still at work when rank 1 fails.
"""

import os
import time


def main() -> None:
    rank = int(os.environ["RANK"])
    for step in range(1, 40):
        if step == 2 and rank == 1:
            raise ValueError("bad batch at step 2 on rank 1 (on purpose)")
        time.sleep(0.25)  # a step's work


if __name__ == "__main__":
    main()
