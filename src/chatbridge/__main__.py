from chatbridge.cli import main

main()
