"""ONC RPC (RFC 5531) as the RPC grinder needs it: messages, record marking, nmap-rpc.

Pure code: nothing here imports Twisted.
"""
