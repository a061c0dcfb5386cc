"""Exam mutual recognition (检查检验结果互认): rules as data, the check, decisions, figures."""
