from chatbridge.commands import main

main()
