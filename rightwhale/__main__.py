"""python -m rightwhale COMMAND ...: one entry point for every command of the package."""
import importlib
import sys

COMMANDS = {
    "identify": ("rightwhale.cli.identify", "which whales are in these photos: a batch, a review page, new whales"),
    "train": ("rightwhale.stages", "train one stage (same as python train.py)"),
    "ensemble": ("rightwhale.cli.ensemble", "stack classifier features (same as python ensemble.py)"),
    "evaluate": ("rightwhale.cli.evaluate", "score a classifier run on a labelled folder (--open-set: new whales)"),
    "catalogue": ("rightwhale.cli.catalogue", "add reviewed photos and new whales to the matcher's catalogue"),
    "reproduce": ("rightwhale.cli.reproduce", "every stage on the embedded survey, then REPRODUCTION.md"),
    "synth": ("rightwhale.io.synth", "generate a synthetic aerial survey"),
    "split": ("rightwhale.io.split", "make or check the one stored train/validation split"),
    "cache": ("rightwhale.io.cache", "decode and resize every photo once"),
    "crop": ("rightwhale.io.crop_folders", "head crops of a data directory"),
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print("usage: python -m rightwhale COMMAND [--help]\n\ncommands:")
        for name, (_, what) in COMMANDS.items():
            print(f"  {name:10s} {what}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    status = importlib.import_module(COMMANDS[argv[0]][0]).main(argv[1:])
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
