"""python -m rightwhale.models NAME [--size S] [--classes K]: print a model's layer table.
python -m rightwhale.models --list: the registered names, each with its docstring's first line.

A nolearn-style table of a model's layers (name, output size, learnable parameters) and its total learnable
parameters (batch-norm mean and variance excluded). Shapes only: nothing is compiled or allocated."""
import argparse
import sys

from rightwhale.core.config import original_recipe

from . import MODELS, REGRESSION_OUTPUTS, get_model, layer_table, model_names


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rightwhale.models", description=__doc__.split("\n\n")[1])
    parser.add_argument("name", nargs="?", choices=model_names(), metavar="NAME",
                        help="model name, one of: " + ", ".join(model_names()))
    parser.add_argument("--list", action="store_true", help="list the model names and what each is")
    parser.add_argument("--size", type=int, help="square input size in pixels (default: the input of the "
                                                 "original definition that trained it, else 256)")
    parser.add_argument("--channels", type=int, default=3, help="input channels (default 3)")
    parser.add_argument("--classes", type=int, default=447, help="number of classes for classifiers "
                        "(default 447); the localizers always have 4 outputs")
    args = parser.parse_args(argv)
    if args.list:
        for name in model_names():
            print(f"{name:20s} {MODELS[name].__doc__.strip().splitlines()[0]}")
        return 0
    if args.name is None:
        parser.error("a model NAME is required (or --list)")
    num_outputs = REGRESSION_OUTPUTS.get(args.name, args.classes)
    if args.size is None:
        recipe = original_recipe(args.name)
        args.size = recipe.image_size if recipe else 256
    try:
        table = layer_table(get_model(args.name, num_outputs), (args.size, args.size, args.channels))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"# {args.name}, input {args.size}x{args.size}x{args.channels}, {num_outputs} outputs\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
