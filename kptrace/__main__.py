from kptrace.cli.main import main

main()
