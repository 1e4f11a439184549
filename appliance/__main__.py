"""``python -m appliance``: the same CLI as the ``appliance`` console script."""

from appliance.cli.main import main

if __name__ == "__main__":
    main()
