"""A script that fails at step 2 on rank 0 (the tests look for its exit status and error tail)."""

import torch.distributed as dist


def main() -> None:
    dist.init_process_group("gloo")
    for step in range(1, 5):
        if step == 2 and dist.get_rank() == 0:
            raise RuntimeError("bad batch at step 2 (on purpose)")
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
