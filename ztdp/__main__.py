from ztdp.cli.main import app

app(prog_name="ztdp")
